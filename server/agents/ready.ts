import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { EventBus } from '../events/bus.ts';
import type { Database } from '../store/schema.ts';
import { MAIN_AGENT } from '../../protocol/agent.ts';
import type { AgentRef } from './hub-types.ts';
import { currentAgentBuild } from './tokens.ts';

/**
 * AgentHub.waitForReady for any replica: the store says whether the agent of a build reported
 * ready (its row in `agents`, written by the replica that holds the agent before it announces the state),
 * and the event bus says when to look again (an `agent` event of that agent; on PostgreSQL it
 * comes from every replica). A build on replica A thus finishes when the agent connected to
 * replica B reports ready. A slow re-read covers a NOTIFY lost while the bus reconnected.
 */
export interface ReadyWaits {
  /** `agent` is how the timeout names the agent ("workspace agent", "agent of service api"). */
  wait(ref: AgentRef, buildId: string, options: { timeoutMs: number; signal?: AbortSignal; agent?: string }): Promise<void>;
  /** Rejects every wait with AGENT_WAIT_CANCELED (server shutdown). */
  cancelAll(): void;
}

/** The backstop re-read while waiting: a lost NOTIFY costs at most this much. */
const RECHECK_MS = 2_000;

/**
 * `localMessage` is the start_error message of a build whose agent is connected to this process,
 * if it has one (the store keeps only the state; other replicas' messages come with their event).
 */
export function createReadyWaits(
  db: Kysely<Database>,
  events: Pick<EventBus, 'subscribe'>,
  localMessage: (ref: AgentRef, buildId: string) => string | undefined = () => undefined,
): ReadyWaits {
  const active = new Set<(error: Error) => void>();
  let closed = false;

  return {
    wait(ref, buildId, options) {
      if (closed) return Promise.reject(canceled());
      return new Promise<void>((resolve, reject) => {
        if (options.signal?.aborted) return reject(canceled());
        let finished = false;
        let checking: Promise<void> | undefined;
        let recheck = false;
        /** the message of the last start_error heard on the bus (the store keeps only the state) */
        let message: string | undefined;

        const finish = (error?: Error) => {
          if (finished) return;
          finished = true;
          clearTimeout(timer);
          clearInterval(backstop);
          unsubscribe();
          options.signal?.removeEventListener('abort', onAbort);
          active.delete(finish);
          if (error) reject(error);
          else resolve();
        };
        const check = () => {
          if (finished) return;
          if (checking) {
            recheck = true;
            return;
          }
          checking = (async () => {
            const row = await db.selectFrom('agents').select('state').where('workspace_id', '=', ref.workspaceId).where('name', '=', ref.agent).executeTakeFirst();
            const state = row?.state;
            if (state !== 'ready' && state !== 'start_error') return;
            if ((await currentAgentBuild(db, ref)) !== buildId) return;
            finish(state === 'ready' ? undefined : startFailed(message ?? localMessage(ref, buildId)));
          })()
            .catch((error: unknown) => finish(error as Error))
            .finally(() => {
              checking = undefined;
              if (recheck) {
                recheck = false;
                check();
              }
            });
        };
        const onAbort = () => finish(canceled());
        const timer = setTimeout(() => finish(new AppError(
          'AGENT_READY_TIMEOUT',
          `The ${options.agent ?? 'workspace agent'} did not become ready within ${Math.round(options.timeoutMs / 1000)} s. Check the build log (\`den logs\`) for the agent's and the startup scripts' output.`,
        )), options.timeoutMs);
        const backstop = setInterval(check, RECHECK_MS);
        // subscribed before the first read, so a report stored in between is not missed
        const unsubscribe = events.subscribe((_id, event) => {
          if (event.type !== 'agent' || event.workspaceId !== ref.workspaceId || (event.agent ?? MAIN_AGENT) !== ref.agent) return;
          if (event.state === 'start_error') message = event.message;
          check();
        });
        options.signal?.addEventListener('abort', onAbort, { once: true });
        active.add(finish);
        check();
      });
    },

    cancelAll() {
      closed = true;
      for (const finish of [...active]) finish(canceled());
    },
  };
}

function startFailed(message: string | undefined): AppError {
  return new AppError(
    'AGENT_START_FAILED',
    `${message ?? 'The workspace agent reported a startup error.'} Fix the startup script in the template (the build log has its output) and start the workspace again.`,
  );
}

function canceled(): AppError {
  return new AppError('AGENT_WAIT_CANCELED', 'Stopped waiting for the workspace agent because the build was canceled or the server is shutting down.');
}
