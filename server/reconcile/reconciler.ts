import { MAIN_AGENT } from '../../protocol/agent.ts';
import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { RuntimeDriver, RuntimeEvent } from '../runtimes/driver.ts';
import type { Store } from '../store/connect.ts';
import { holdLease, releaseLease } from '../store/leases.ts';
import type { Database } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import { getTemplateVersionById } from '../templates/store.ts';
import { listWorkspaceEvents, recordWorkspaceEvent } from '../workspaces/events.ts';
import { markDown, markRecovered, timeOfDay, type DownReport } from './health.ts';
import type { EventPublisher } from '../events/bus.ts';

export interface ReconcilerDeps {
  store: Store;
  /** where a workspace seen down or recovered is announced */
  events?: EventPublisher;
  clock: Clock;
  log: Logger;
  driver: RuntimeDriver;
  /** how often the loop runs (default 1 s): the detection time is at most this after the driver's report */
  intervalMs?: number;
  /** how long a running workspace's agent may stay disconnected before it is shown down (default 15 s) */
  agentGraceMs?: number;
  /** how often garbage is collected (default 5 min; the first run one interval after start) */
  gcIntervalMs?: number;
  /**
   * Queues a start build of a down workspace whose template asks for `lifecycle.restart:
   * on-failure` (the lifecycle's own transition, as the owner asked for it); absent: no restarts.
   */
  restart?: (workspaceId: string) => Promise<void>;
  /** automatic restarts allowed per workspace within RESTART_WINDOW_MS (default 3) */
  maxRestarts?: number;
  /** the wait before the first automatic restart, doubled for each one after it in the window (default 1 s) */
  restartBackoffMs?: number;
}

export interface Reconciler {
  start(): void;
  /** Stops the loop and gives the lease up, so another replica takes over at once. */
  stop(): Promise<void>;
  /** One pass (the loop's body; tests and the benchmark call it to not wait for the timer). */
  tick(): Promise<void>;
  /** Removes the runtime objects of workspaces that no longer exist; returns their ids. */
  collectGarbage(): Promise<string[]>;
}

const LEASE_NAME = 'reconciler';
const DEFAULT_INTERVAL_MS = 1_000;
/** Three heartbeats of the agent link (15 s) is when the hub drops a silent agent; a reconnect after a den restart takes a few seconds. */
const DEFAULT_AGENT_GRACE_MS = 15_000;
const DEFAULT_GC_INTERVAL_MS = 5 * 60_000;
/** Automatic restarts are counted over this window: more than maxRestarts in it and den gives up. */
/** template versions whose restart policy is remembered; cleared when it grows past this */
const RESTART_POLICY_CACHE = 1_000;
const RESTART_WINDOW_MS = 10 * 60_000;
const DEFAULT_MAX_RESTARTS = 3;
const DEFAULT_RESTART_BACKOFF_MS = 1_000;
/** Runtime events kept while this replica is not the leader or the store is slow; older ones are dropped. */
const MAX_PENDING_EVENTS = 10_000;

/**
 * The reconcile loop: one per deployment, on the replica holding the `reconciler` lease. It
 * compares what should run (workspaces whose status is running) with what the runtime and the
 * agent hub report, and shows a workspace whose agent, container or service died as down, with
 * a sentence, a timestamp and a workspace event. It never writes `status`: the lifecycle owns it,
 * and `den start` (allowed on a down workspace) brings the workspace back; the loop then marks
 * it recovered. It also collects the runtime objects of workspaces that no longer exist.
 */
export function createReconciler(deps: ReconcilerDeps): Reconciler {
  const db = deps.store.db;
  const log = deps.log.child({ module: 'reconciler' });
  const owner = randomUUID();
  const intervalMs = deps.intervalMs ?? DEFAULT_INTERVAL_MS;
  const graceMs = deps.agentGraceMs ?? DEFAULT_AGENT_GRACE_MS;
  const gcIntervalMs = deps.gcIntervalMs ?? DEFAULT_GC_INTERVAL_MS;
  const pending: RuntimeEvent[] = [];
  const restartPolicies = new Map<string, string | undefined>();
  let unobserve: (() => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let lastGc = 0;
  let stopped = false;

  const tick = (): Promise<void> => {
    running ??= pass().catch((error: unknown) => log.error({ err: error }, 'a reconcile pass failed; the next one retries'))
      .finally(() => { running = undefined; });
    return running;
  };

  async function pass(): Promise<void> {
    const now = deps.clock.now();
    // A lease three intervals long: a leader that dies is replaced within about three seconds.
    const leader = await holdLease(db, LEASE_NAME, owner, now, 3 * intervalMs);
    const events = pending.splice(0);
    if (!leader || stopped) return;
    for (const event of events) await onRuntimeEvent(event);
    await findLostAgents(now);
    await findRecovered(now);
    if (deps.restart) await restartFailed(now, deps.restart);
    if (lastGc === 0) lastGc = now.getTime();
    if (now.getTime() - lastGc >= gcIntervalMs) {
      lastGc = now.getTime();
      await collectGarbage();
    }
  }

  async function onRuntimeEvent(event: RuntimeEvent): Promise<void> {
    const workspace = await runningWorkspace(db, event.workspaceId);
    // Not running: den itself is starting, stopping or deleting it, and the build reports what fails.
    if (!workspace) return;
    const report = describe(event, `${workspace.owner_name}/${workspace.name}`);
    await showDown(deps.clock.now(), report);
  }

  /** Marks the workspace down; the first time, logs and announces it with its sentence. */
  async function showDown(now: Date, report: DownReport): Promise<void> {
    if (!(await markDown(db, now, report))) return;
    log.info({ workspaceId: report.workspaceId, kind: report.kind }, report.message);
    deps.events?.publish({ type: 'agent', workspaceId: report.workspaceId, at: iso(now), state: 'down', message: report.message });
  }

  async function findLostAgents(now: Date): Promise<void> {
    // An agent reconnects by itself after a blip, so its loss is judged after the grace period:
    // the workspace's own agent, or the one beside a service (the hub records that one's
    // disconnection as an event at once).
    const rows = await db.selectFrom('workspaces as w').innerJoin('users as u', 'u.id', 'w.owner_id')
      .innerJoin('agents as a', 'a.workspace_id', 'w.id')
      .select(['w.id', 'w.name', 'u.username as owner_name', 'a.name as agent', 'a.disconnected_at as agent_disconnected_at'])
      .where('w.status', '=', 'running').where('w.deleted_at', 'is', null)
      .where('a.disconnected_at', '<=', iso(new Date(now.getTime() - graceMs)))
      .where((eb) => eb.or([eb('w.health', 'is', null), eb('w.health', '!=', 'down')]))
      .execute();
    for (const row of rows) {
      const since = new Date(row.agent_disconnected_at!);
      const which = row.agent === MAIN_AGENT ? 'The agent' : `The agent of service ${row.agent}`;
      const report: DownReport = {
        workspaceId: row.id,
        kind: 'agent_lost',
        message: `${which} of workspace '${row.owner_name}/${row.name}' lost its connection at ${timeOfDay(since)} and has not come back within ${Math.round(graceMs / 1000)} s.`,
        detail: { agent: row.agent, disconnectedAt: row.agent_disconnected_at, graceMs },
      };
      await showDown(now, report);
    }
  }

  async function findRecovered(now: Date): Promise<void> {
    const rows = await db.selectFrom('workspaces as w').innerJoin('users as u', 'u.id', 'w.owner_id')
      .innerJoin('builds as b', 'b.id', 'w.last_build_id')
      .innerJoin('agents as a', (join) => join.onRef('a.workspace_id', '=', 'w.id').on('a.name', '=', MAIN_AGENT))
      .select(['w.id', 'w.name', 'u.username as owner_name', 'b.number', 'b.finished_at'])
      .where('w.health', '=', 'down').where('w.status', '=', 'running').where('w.deleted_at', 'is', null)
      .where('a.state', '=', 'ready').where('a.disconnected_at', 'is', null)
      // every agent back, the services' too
      .where((eb) => eb.not(eb.exists(eb.selectFrom('agents as other').select('other.name')
        .whereRef('other.workspace_id', '=', 'w.id').where('other.disconnected_at', 'is not', null))))
      .where('b.transition', '=', 'start').where('b.state', '=', 'succeeded')
      .whereRef('b.finished_at', '>', 'w.health_at')
      .execute();
    for (const row of rows) {
      const message = `Workspace '${row.owner_name}/${row.name}' is running again since build #${row.number}.`;
      if (await markRecovered(db, now, row.id, message, { build: row.number })) {
        deps.events?.publish({ type: 'agent', workspaceId: row.id, at: iso(now), state: 'recovered', message });
      }
    }
  }

  /**
   * Down workspaces whose template asks for it are started again, with back-off, at most
   * maxRestarts times within RESTART_WINDOW_MS; then once an event says den gave up. Counted from
   * the workspace's events, so a new leader continues where the last one stopped.
   */
  /** Versions never change, so a down workspace's policy is read from the store once, not every pass. */
  async function restartPolicyOf(versionId: string): Promise<string | undefined> {
    if (!restartPolicies.has(versionId)) {
      if (restartPolicies.size >= RESTART_POLICY_CACHE) restartPolicies.clear();
      restartPolicies.set(versionId, (await getTemplateVersionById(db, versionId))?.spec.lifecycle?.restart);
    }
    return restartPolicies.get(versionId);
  }

  async function restartFailed(now: Date, restart: (workspaceId: string) => Promise<void>): Promise<void> {
    const maxRestarts = deps.maxRestarts ?? DEFAULT_MAX_RESTARTS;
    const backoffMs = deps.restartBackoffMs ?? DEFAULT_RESTART_BACKOFF_MS;
    const rows = await db.selectFrom('workspaces as w').innerJoin('users as u', 'u.id', 'w.owner_id')
      .leftJoin('builds as b', 'b.id', 'w.last_build_id')
      .select(['w.id', 'w.name', 'u.username as owner_name', 'w.template_version_id', 'w.health_at', 'b.state as build_state'])
      .where('w.health', '=', 'down').where('w.status', '=', 'running').where('w.deleted_at', 'is', null)
      .execute();
    for (const row of rows) {
      if (row.build_state === 'queued' || row.build_state === 'running') continue;
      if (await restartPolicyOf(row.template_version_id) !== 'on-failure') continue;
      const events = await listWorkspaceEvents(db, row.id);
      const recent = events.filter((e) => e.kind === 'workspace_auto_restarted' && Date.parse(e.ts) > now.getTime() - RESTART_WINDOW_MS);
      const label = `${row.owner_name}/${row.name}`;
      if (recent.length >= maxRestarts) {
        const gaveUp = events.some((e) => e.kind === 'workspace_auto_restart_given_up' && e.ts >= row.health_at!);
        if (!gaveUp) {
          await recordWorkspaceEvent(db, now, {
            workspaceId: row.id, kind: 'workspace_auto_restart_given_up',
            message: `den started workspace '${label}' again ${recent.length} time${recent.length === 1 ? '' : 's'} within ${RESTART_WINDOW_MS / 60_000} minutes and it failed each time, so it stopped trying. Look at \`den events ${row.name}\` and the build logs, then start it with \`den start ${row.name}\`.`,
            detail: { restarts: recent.length, windowMs: RESTART_WINDOW_MS },
          });
        }
        continue;
      }
      const last = recent[0] ? Date.parse(recent[0].ts) : 0;
      if (now.getTime() - Math.max(last, Date.parse(row.health_at!)) < backoffMs * 2 ** recent.length) continue;
      try {
        await restart(row.id);
      } catch (error) {
        log.warn({ err: error, workspaceId: row.id }, 'could not queue the automatic restart of a down workspace; the next pass tries again');
        continue;
      }
      await recordWorkspaceEvent(db, now, {
        workspaceId: row.id, kind: 'workspace_auto_restarted',
        message: `den started workspace '${label}' again because its template asks for a restart on failure (restart ${recent.length + 1} of at most ${maxRestarts} within ${RESTART_WINDOW_MS / 60_000} minutes).`,
        detail: { attempt: recent.length + 1, maxRestarts },
      });
    }
  }

  async function collectGarbage(): Promise<string[]> {
    if (!deps.driver.collectGarbage) return [];
    const removed = await deps.driver.collectGarbage(async (workspaceId) => {
      const row = await db.selectFrom('workspaces').select('id').where('id', '=', workspaceId).where('deleted_at', 'is', null).executeTakeFirst();
      return row !== undefined;
    });
    for (const workspaceId of removed) log.info({ workspaceId }, 'garbage collected the runtime objects of a workspace that no longer exists');
    return removed;
  }

  return {
    start() {
      unobserve = deps.driver.observe?.((event) => {
        if (pending.length < MAX_PENDING_EVENTS) pending.push(event);
        void tick();
      });
      timer = setInterval(() => void tick(), intervalMs);
      timer.unref();
    },
    async stop() {
      stopped = true;
      unobserve?.();
      clearInterval(timer);
      await running;
      await releaseLease(db, LEASE_NAME, owner, deps.clock.now()).catch(() => undefined);
    },
    tick,
    collectGarbage,
  };
}

async function runningWorkspace(db: Kysely<Database>, workspaceId: string) {
  return db.selectFrom('workspaces as w').innerJoin('users as u', 'u.id', 'w.owner_id')
    .select(['w.id', 'w.name', 'u.username as owner_name'])
    .where('w.id', '=', workspaceId).where('w.status', '=', 'running').where('w.deleted_at', 'is', null)
    .executeTakeFirst();
}

/** The owner's sentence for a runtime event: what died, when, and why as far as the runtime knows. */
function describe(event: RuntimeEvent, label: string): DownReport {
  const what = event.subject.type === 'agent'
    ? (event.subject.name && event.subject.name !== MAIN_AGENT ? `The agent of service ${event.subject.name} of workspace '${label}'` : `The agent of workspace '${label}'`)
    : event.subject.type === 'service' ? `Service ${event.subject.name} of workspace '${label}'`
      : `The container of workspace '${label}'`;
  const at = timeOfDay(event.at);
  const message = event.kind === 'oom_killed' ? `${what} was killed at ${at} because it ran out of memory (OOM).`
    : event.kind === 'removed' ? `${what} was removed at ${at}, not by den.`
      : event.kind === 'image_missing' ? `${what} cannot run since ${at}: its image is missing ${event.cause}.`
        : event.kind === 'probe_failing' ? `${what} fails its readiness check since ${at} ${event.cause}.`
          : `${what} exited at ${at} ${event.cause}.`;
  return {
    workspaceId: event.workspaceId,
    kind: `${event.subject.type}_${event.kind}`,
    message,
    detail: { subject: event.subject, at: iso(event.at), cause: event.cause, ...event.detail },
  };
}
