import { AppError } from '../../protocol/errors.ts';
import type { LifecycleState } from '../../protocol/agent.ts';

interface Waiter {
  buildId: string;
  resolve(): void;
  reject(error: Error): void;
}

/**
 * The in-process side of AgentHub.waitForReady: callers wait on (workspace, build) and are
 * settled when that build's agent reports ready or start_error, or when they time out or are
 * aborted.
 */
export function createReadyWaiters() {
  const waiters = new Map<string, Set<Waiter>>();

  const outcome = (state: 'ready' | 'start_error', message: string | undefined): Promise<void> =>
    state === 'ready' ? Promise.resolve() : Promise.reject(startFailed(message));

  return {
    outcome,

    canceled,

    /** `agent` is how the timeout names the agent ("workspace agent", "agent of service api"). */
    wait(workspaceId: string, buildId: string, options: { timeoutMs: number; signal?: AbortSignal; agent?: string }): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        if (options.signal?.aborted) return reject(canceled());
        let set = waiters.get(workspaceId);
        if (!set) waiters.set(workspaceId, (set = new Set()));
        const cleanup = () => {
          clearTimeout(timer);
          options.signal?.removeEventListener('abort', onAbort);
          set!.delete(waiter);
          if (set!.size === 0 && waiters.get(workspaceId) === set) waiters.delete(workspaceId);
        };
        const waiter: Waiter = {
          buildId,
          resolve: () => (cleanup(), resolve()),
          reject: (error) => (cleanup(), reject(error)),
        };
        const onAbort = () => waiter.reject(canceled());
        const timer = setTimeout(() => {
          waiter.reject(
            new AppError(
              'AGENT_READY_TIMEOUT',
              `The ${options.agent ?? 'workspace agent'} did not become ready within ${Math.round(options.timeoutMs / 1000)} s. Check the build log (\`den logs\`) for the agent's and the startup scripts' output.`,
            ),
          );
        }, options.timeoutMs);
        options.signal?.addEventListener('abort', onAbort, { once: true });
        set.add(waiter);
      });
    },

    /** A lifecycle report arrived (and was stored): settle the waiters of that build. */
    settle(workspaceId: string, buildId: string, state: LifecycleState, message: string | undefined): void {
      if (state !== 'ready' && state !== 'start_error') return;
      for (const waiter of [...(waiters.get(workspaceId) ?? [])]) {
        if (waiter.buildId !== buildId) continue;
        if (state === 'ready') waiter.resolve();
        else waiter.reject(startFailed(message));
      }
    },

    cancelAll(): void {
      for (const set of [...waiters.values()]) for (const waiter of [...set]) waiter.reject(canceled());
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
