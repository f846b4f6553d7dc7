import { AGENT_BUNDLE_PATH, type AgentDownload } from '../runtimes/agent-download.ts';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Kysely } from 'kysely';
import { isAppError } from '../../protocol/errors.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import type { DenBase } from '../base.ts';
import type { EventPublisher } from '../events/bus.ts';
import type { Metrics } from '../http/metrics.ts';
import type { BuildState, Database } from '../store/schema.ts';
import { iso } from '../store/time.ts';
import type { BuildLogs } from './logs.ts';
import {
  cancelRequestOf, claimBuild, enqueueBuild, finishBuild, renewLease, requeueBuild, saveSteps,
  type BuildRow, type BuildStep, type EnqueueRequest,
} from './queue.ts';
import { runTransition, type RunStep } from './steps.ts';
import { getUserById } from '../users/users.ts';
import { interruptBuildStatus, INTERRUPTED_STATUS } from '../workspaces/lifecycle.ts';

export type { BuildRow, BuildStep, EnqueueRequest } from './queue.ts';
export type { BuildLogs, BuildLogRow } from './logs.ts';

export interface BuildService {
  /** the build log: a BuildLogSink for drivers and the agent hub, plus read and live follow */
  readonly logs: BuildLogs;
  /** starts config.buildWorkers workers in this process */
  start(): Promise<void>;
  /** stops claiming, lets running builds finish briefly, hands the rest back to the queue */
  stop(): Promise<void>;
  /**
   * Queues a build (BUILD_IN_PROGRESS when one is queued or running). Inside a caller's
   * transaction pass `trx` and call `wake(build)` after it commits (it announces the build queued); without it, it commits and wakes.
   */
  enqueue(request: EnqueueRequest, trx?: Kysely<Database>): Promise<BuildRow>;
  /**
   * Wakes idle workers of this process at once (cross-replica work is found by polling). Given
   * the build a caller's transaction queued, after it committed, announces it queued.
   */
  wake(queued?: BuildRow): void;
  /** Announces a build that ended without a worker (a queued build canceled), after its transaction committed. */
  announce(build: AnnouncedBuild, state: BuildState): void;
  /**
   * Aborts a build this process is running, after its cancel was recorded in the store
   * (queue.ts requestBuildCancel). A build held by another replica is aborted there when its
   * worker next renews the lease.
   */
  abort(buildId: string, canceledBy: string): void;
}

export interface BuildServiceDeps extends DenBase {
  /** the agents a build waits for (readiness) and asks to shut down */
  agents: AgentHub;
  /** the build log, created before the agent hub, which writes agents' startup lines into it */
  logs: BuildLogs;
  metrics: Pick<Metrics, 'buildsTotal' | 'buildDuration'>;
  /** where build progress and the workspace status a build sets are announced */
  events: EventPublisher;
  /** den's agent bundle as served by its route: a plan whose runtime downloads the agent names its checksum */
  agentBundle: Pick<AgentDownload, 'archive'>;
}

/** What a build event names of its build. */
export type AnnouncedBuild = Pick<BuildRow, 'id' | 'workspace_id' | 'number' | 'transition'>;

/** The abort reason of a build canceled by a user (as opposed to shutdown or a lost lease). */
class BuildCanceled extends Error {
  readonly userId: string;
  constructor(userId: string) {
    super('build canceled');
    this.userId = userId;
  }
}

/** How often idle workers look for builds queued by other replicas. */
const POLL_MS = 1_000;
/** A build interrupted this many times (its server died each time) is failed, not retried. */
export const MAX_BUILD_ATTEMPTS = 3;
/** On graceful shutdown, how long running builds may take before they are handed back. */
const SHUTDOWN_GRACE_MS = 3_000;

/**
 * The provisioner: build jobs in the store, taken by workers under a lease. A server that dies
 * mid-build leaves a lease that expires; the next worker (here or on another replica) resumes
 * the build, or fails it with a sentence after MAX_BUILD_ATTEMPTS, so no workspace stays
 * "starting" forever.
 */
export function createBuildService(deps: BuildServiceDeps): BuildService {
  const { db } = deps.store;
  const { agents, logs, metrics } = deps;
  const workerId = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  const leaseMs = deps.config.buildLeaseSeconds * 1000;
  let stopping = false;
  let workers: Promise<void>[] = [];
  let idle = new Set<() => void>();
  const inflight = new Map<string, { controller: AbortController; done: Promise<void> }>();

  function wake(queued?: BuildRow): void {
    if (queued) announce(queued, 'queued');
    const waiting = idle;
    idle = new Set();
    for (const resolve of waiting) resolve();
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        idle.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      idle.add(done);
    });
  }

  async function workerLoop(): Promise<void> {
    while (!stopping) {
      let build: BuildRow | undefined;
      try {
        build = await claimBuild(db, workerId, deps.clock.now(), leaseMs);
      } catch (error) {
        if (!stopping) deps.log.error({ err: error }, 'claiming a build failed');
      }
      if (build) {
        await runBuild(build);
        continue;
      }
      await sleep(POLL_MS);
    }
  }

  async function runBuild(build: BuildRow): Promise<void> {
    const controller = new AbortController();
    let release!: () => void;
    const done = new Promise<void>((resolve) => (release = resolve));
    inflight.set(build.id, { controller, done });
    try {
      await execute(build, controller);
    } catch (error) {
      deps.log.error({ err: error, buildId: build.id }, 'build bookkeeping failed');
    } finally {
      inflight.delete(build.id);
      release();
    }
  }

  /** Announces the build's progress: it began (running), a step began or ended, it finished. */
  function announce(build: AnnouncedBuild, state: BuildState, step?: BuildStep): void {
    deps.events.publish({
      type: 'build', workspaceId: build.workspace_id, at: iso(deps.clock.now()), buildId: build.id, number: build.number,
      transition: build.transition, state, ...(step ? { step: { name: step.name, state: step.state } } : {}),
    });
  }

  async function execute(build: BuildRow, controller: AbortController): Promise<void> {
    const started = performance.now();
    const steps: BuildStep[] = [];
    announce(build, 'running');
    const system = (line: string, stream: 'system' | 'stderr' = 'system') => logs.append(build.id, { stream, line });
    let lostLease = false;
    const renew = setInterval(() => {
      renewLease(db, build.id, workerId, new Date(deps.clock.now().getTime() + leaseMs))
        .then(async (held) => {
          if (!held && !controller.signal.aborted) {
            lostLease = true;
            controller.abort(new Error('lease lost'));
          }
          const canceledBy = held ? await cancelRequestOf(db, build.id) : null;
          if (canceledBy && !controller.signal.aborted) controller.abort(new BuildCanceled(canceledBy));
        })
        .catch((error) => deps.log.warn({ err: error, buildId: build.id }, 'renewing a build lease failed'));
    }, Math.max(1_000, leaseMs / 3));

    let state: 'succeeded' | 'failed' | 'canceled' = 'succeeded';
    let error: string | null = null;
    // A build whose cancel was asked while no worker held it (its server died) ends here.
    if (build.cancel_requested_by) controller.abort(new BuildCanceled(build.cancel_requested_by));
    try {
      if (controller.signal.aborted) throw controller.signal.reason;
      if (build.attempts > MAX_BUILD_ATTEMPTS) {
        throw new Error(
          `The build was interrupted ${build.attempts - 1} times because the server running it stopped, so den gave up on it. Run \`den ${build.transition === 'delete' ? 'delete' : 'start'}\` to try again.`);
      }
      if (build.attempts > 1) {
        system(`The server running this build stopped before it finished; resuming it (attempt ${build.attempts} of ${MAX_BUILD_ATTEMPTS}).`);
      } else {
        system(`Build #${build.number}: ${build.transition} (${build.reason}).`);
      }
      const step: RunStep = async (name, work) => {
        if (controller.signal.aborted) throw controller.signal.reason;
        const entry: BuildStep = { name, startedAt: iso(deps.clock.now()), state: 'running' };
        steps.push(entry);
        announce(build, 'running', entry);
        logs.append(build.id, { stream: 'system', step: name, line: `==> ${name}` });
        const t0 = performance.now();
        try {
          const result = await work({
            log: (line, stream = 'system') => logs.append(build.id, { stream, step: name, line }),
            signal: controller.signal,
          });
          entry.state = 'succeeded';
          return result;
        } catch (failure) {
          entry.state = 'failed';
          throw failure;
        } finally {
          entry.durationMs = Math.round(performance.now() - t0);
          entry.finishedAt = iso(deps.clock.now());
          logs.append(build.id, { stream: 'system', step: name, line: `<== ${name} ${entry.state} in ${entry.durationMs} ms` });
          await saveSteps(db, build.id, workerId, steps).catch(() => undefined);
          announce(build, 'running', entry);
        }
      };
      await runTransition(build, {
        db, clock: deps.clock, driver: deps.driver, agents, accessUrl: deps.config.accessUrl, events: deps.events,
        agentDownload: async () => ({ url: `${deps.config.accessUrl.replace(/\/+$/, '')}${AGENT_BUNDLE_PATH}`, sha256: (await deps.agentBundle.archive()).sha256 }),
      }, step);
    } catch (failure) {
      if (controller.signal.reason instanceof BuildCanceled) {
        state = 'canceled';
        error = await canceledSentence(controller.signal.reason.userId);
        system(error);
        await interruptBuildStatus(db, deps.events, build.workspace_id, deps.clock.now()).catch(() => undefined);
      } else if (controller.signal.aborted) {
        clearInterval(renew);
        await logs.flush();
        if (lostLease) return; // another worker owns the build now
        system('This server is shutting down; the build goes back to the queue and resumes on the next start.');
        await logs.flush();
        await requeueBuild(db, build.id, workerId);
        logs.notify(build.id);
        return;
      } else {
        state = 'failed';
        error = failureSentence(failure);
        system(error, 'stderr');
        const detail = isAppError(failure) ? failure.detail : undefined;
        if (detail) for (const line of detail.split('\n')) system(line, 'stderr');
        if (!isAppError(failure)) deps.log.error({ err: failure, buildId: build.id }, 'build failed unexpectedly');
        await interruptBuildStatus(db, deps.events, build.workspace_id, deps.clock.now()).catch(() => undefined);
      }
    } finally {
      clearInterval(renew);
    }
    const seconds = (performance.now() - started) / 1000;
    const ending = { succeeded: 'succeeded in', failed: 'failed after', canceled: 'was canceled after' }[state];
    system(`Build #${build.number} ${ending} ${seconds.toFixed(2)} s.`);
    await logs.flush();
    const finished = await finishBuild(db, build.id, workerId, { state, error, steps, now: deps.clock.now() });
    logs.notify(build.id);
    if (finished) {
      announce(build, state);
      metrics.buildsTotal.inc({ transition: build.transition, state });
      metrics.buildDuration.observe({ transition: build.transition }, seconds);
      if (state === 'succeeded' && build.transition === 'stop' && build.reason === 'restart') await chainRestart(build);
    }
  }

  async function canceledSentence(userId: string): Promise<string> {
    const user = await getUserById(db, userId).catch(() => undefined);
    return `Canceled by ${user?.username ?? 'a user who no longer exists'}; the workspace is left ${INTERRUPTED_STATUS}. Start, stop or delete it.`;
  }

  /** A restart is a stop build followed by a start build, queued when the stop succeeded. */
  async function chainRestart(stopped: BuildRow): Promise<void> {
    try {
      const started = await db.transaction().execute((trx) => enqueueBuild(trx, {
        workspaceId: stopped.workspace_id, transition: 'start', reason: 'restart', initiatorId: stopped.initiator_id,
        templateVersionId: stopped.template_version_id, params: JSON.parse(stopped.params_json), now: deps.clock.now(),
      }));
      wake(started);
    } catch (error) {
      deps.log.warn({ err: error, buildId: stopped.id }, 'queueing the start half of a restart failed');
    }
  }

  return {
    logs,
    async start() {
      if (workers.length > 0) return;
      stopping = false;
      workers = Array.from({ length: deps.config.buildWorkers }, () => workerLoop());
    },
    async stop() {
      stopping = true;
      wake();
      const running = [...inflight.values()];
      const graceful = Promise.all(running.map((r) => r.done));
      const timer = new Promise((resolve) => setTimeout(resolve, SHUTDOWN_GRACE_MS).unref());
      await Promise.race([graceful, timer]);
      for (const r of inflight.values()) r.controller.abort(new Error('server shutting down'));
      await Promise.all(workers);
      workers = [];
      await logs.flush();
    },
    async enqueue(request, trx) {
      if (trx) return enqueueBuild(trx, request);
      const build = await db.transaction().execute((t) => enqueueBuild(t, request));
      wake(build);
      return build;
    },
    wake,
    announce,
    abort(buildId, canceledBy) {
      const running = inflight.get(buildId);
      if (running && !running.controller.signal.aborted) running.controller.abort(new BuildCanceled(canceledBy));
    },
  };
}

function failureSentence(failure: unknown): string {
  if (isAppError(failure)) return failure.message;
  const message = failure instanceof Error ? failure.message : String(failure);
  return /[.!?]$/.test(message) ? message : `${message}.`;
}
