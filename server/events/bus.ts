import type { WorkspaceEvent } from '../../protocol/events.ts';

/**
 * Where workspace status, build progress and agent state changes are announced, for the client
 * event stream. In-process today; a PostgreSQL LISTEN/NOTIFY bus (several replicas) implements
 * the same interface.
 */

/** What the places where events originate (lifecycle, builds, agent hub, reconciler) receive. */
export interface EventPublisher {
  publish(event: WorkspaceEvent): void;
}

export interface EventBus extends EventPublisher {
  /** Calls `listener` for each event published from now on, with its id; returns the unsubscribe. */
  subscribe(listener: (id: number, event: WorkspaceEvent) => void): () => void;
  /** how many subscribers listen now (for tests and metrics) */
  readonly subscribers: number;
}

/**
 * The bus of one process. Ids increase by one per event for the life of the process, so a
 * subscriber sees gaps nowhere but where it was not allowed to see the event. A listener that
 * throws is logged and kept: a subscriber's fault must not stop the status write that published.
 */
export function createLocalEventBus(onListenerError: (error: unknown) => void): EventBus {
  const listeners = new Set<(id: number, event: WorkspaceEvent) => void>();
  let lastId = 0;
  return {
    publish(event) {
      const id = ++lastId;
      for (const listener of listeners) {
        try {
          listener(id, event);
        } catch (error) {
          onListenerError(error);
        }
      }
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    get subscribers() {
      return listeners.size;
    },
  };
}
