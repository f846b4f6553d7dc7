import { workspaceEventSchema, type WorkspaceEvent } from '../../protocol/events.ts';
import type { PgNotifier } from '../store/pg-notify.ts';

/**
 * Where workspace status, build progress and agent state changes are announced, for the client
 * event stream: in-process on SQLite, shared by the replicas over PostgreSQL LISTEN/NOTIFY.
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

const EVENTS_CHANNEL = 'den_events';
/** an agent's message is the only open-ended field; cut to this when the event would not fit a NOTIFY */
const MESSAGE_CUT_CHARS = 1_000;

/**
 * The bus of replicas sharing one PostgreSQL database: an event published here reaches this
 * process's subscribers at once (as on the local bus) and the other replicas' through NOTIFY.
 * Ids stay per process: each replica numbers the events its subscribers receive.
 */
export function createPgEventBus(notifier: PgNotifier, log: { error(details: object, message: string): void }): EventBus {
  const local = createLocalEventBus((error) => log.error({ err: error }, 'an event subscriber failed'));
  notifier.listen(EVENTS_CHANNEL, (message) => {
    const parsed = workspaceEventSchema.safeParse(message);
    if (parsed.success) local.publish(parsed.data);
    else log.error({ issues: parsed.error.issues }, 'another replica sent an event this one does not understand; it was ignored');
  });
  return {
    publish(event) {
      local.publish(event);
      if (notifier.notify(EVENTS_CHANNEL, event)) return;
      if ('message' in event && event.message && notifier.notify(EVENTS_CHANNEL, { ...event, message: event.message.slice(0, MESSAGE_CUT_CHARS) })) return;
      log.error({ type: event.type, workspaceId: event.workspaceId }, 'an event was too large for a NOTIFY; other replicas\' subscribers miss it');
    },
    subscribe: (listener) => local.subscribe(listener),
    get subscribers() {
      return local.subscribers;
    },
  };
}
