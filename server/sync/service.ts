import type { Kysely } from 'kysely';
import type { SyncStatus } from '../../protocol/sync.ts';
import type { TemplateSpec } from '../../protocol/template-fields.ts';
import { AppError } from '../../protocol/errors.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import type { Clock } from '../store/time.ts';
import type { EventBus } from '../events/bus.ts';
import type { CapabilitySupport } from '../runtimes/capabilities.ts';
import type { Database } from '../store/schema.ts';
import { getTemplateVersionById } from '../templates/store.ts';
import { recordWorkspaceEvent } from '../workspaces/events.ts';
import { SyncRunner, type SyncSpec } from './runner.ts';

/** How often syncs waiting for an agent try again. */
const RETRY_MS = 2_000;

export interface WorkspaceSyncs {
  /** The syncs of a workspace and their state (empty when it declares none or is not running). */
  status(workspaceId: string): SyncStatus[];
  /** Stops and starts a workspace's syncs again (all, or one service's): a full copy, then watching. */
  restart(workspaceId: string, service?: string): Promise<void>;
  start(): Promise<void>;
  stop(): void;
}

export interface WorkspaceSyncDeps {
  db: Kysely<Database>;
  agents: AgentHub;
  events: EventBus;
  clock: Clock;
  log: { warn(details: object, message: string): void };
  /** the runtime's `sync` capability: enforced runs the syncs, shared shows them as the same folder, anything else runs none */
  support: CapabilitySupport;
}

/**
 * The live syncs of this server's running workspaces (ADR 0023): started when a workspace
 * becomes running, stopped when it leaves that status, resumed when an agent reconnects.
 * Runs where the build workers run.
 */
export function createWorkspaceSyncs(deps: WorkspaceSyncDeps): WorkspaceSyncs {
  const byWorkspace = new Map<string, SyncRunner[]>();
  /** on a runtime whose services see the workspace's own files: the declared syncs, shown as such while the workspace runs */
  const shared = new Map<string, SyncStatus[]>();
  let unsubscribe: (() => void) | undefined;
  let retryTimer: NodeJS.Timeout | undefined;

  const event = (workspaceId: string) => (kind: string, message: string, detail: Record<string, unknown>) => {
    void recordWorkspaceEvent(deps.db, deps.clock.now(), { workspaceId, kind, message, detail })
      .catch((error: unknown) => deps.log.warn({ err: error, workspaceId }, 'recording a sync event failed'));
  };
  const launch = (runner: SyncRunner) => {
    void runner.start().catch((error: unknown) => deps.log.warn({ err: error }, 'a sync failed to start'));
  };
  const startFor = async (workspaceId: string) => {
    if (byWorkspace.has(workspaceId)) return;
    const specs = await syncSpecsOf(deps.db, workspaceId);
    if (specs.length === 0 || byWorkspace.has(workspaceId)) return;
    if (deps.support === 'shared') {
      shared.set(workspaceId, specs.map(sharedStatus));
      return;
    }
    if (deps.support !== 'enforced') return;
    const runners = specs.map((spec) => new SyncRunner(workspaceId, spec, { agents: deps.agents, event: event(workspaceId), now: () => deps.clock.now() }));
    byWorkspace.set(workspaceId, runners);
    runners.forEach(launch);
  };
  const stopFor = (workspaceId: string) => {
    for (const runner of byWorkspace.get(workspaceId) ?? []) runner.stop();
    byWorkspace.delete(workspaceId);
    shared.delete(workspaceId);
  };
  const retryWaiting = (workspaceId?: string) => {
    for (const [id, runners] of byWorkspace) {
      if (workspaceId && id !== workspaceId) continue;
      for (const runner of runners) if (runner.status.state === 'waiting' && !runner.running) launch(runner);
    }
  };

  return {
    status(workspaceId) {
      return shared.get(workspaceId) ?? (byWorkspace.get(workspaceId) ?? []).map((runner) => runner.status);
    },
    async restart(workspaceId, service) {
      const runners = byWorkspace.get(workspaceId);
      if (!runners) {
        await startFor(workspaceId);
        if (shared.has(workspaceId)) return;
        if (!byWorkspace.has(workspaceId)) throw new AppError('SYNC_NOT_FOUND', 'This workspace syncs nothing while it runs: its template declares no `sync` on any service, or the workspace is not running. Start it first.');
        return;
      }
      const chosen = runners.filter((runner) => service === undefined || runner.spec.service === service);
      if (chosen.length === 0) throw new AppError('SYNC_NOT_FOUND', `The service '${service}' syncs nothing; \`den sync status\` lists the services that do.`);
      const fresh = runners.map((runner) => {
        if (!chosen.includes(runner)) return runner;
        runner.stop();
        return new SyncRunner(workspaceId, runner.spec, { agents: deps.agents, event: event(workspaceId), now: () => deps.clock.now() });
      });
      byWorkspace.set(workspaceId, fresh);
      fresh.filter((runner) => !runners.includes(runner)).forEach(launch);
    },
    async start() {
      unsubscribe = deps.events.subscribe((_id, change) => {
        if (change.type === 'workspace.status') {
          if (change.status === 'running') void startFor(change.workspaceId).catch((error: unknown) => deps.log.warn({ err: error }, 'starting syncs failed'));
          else stopFor(change.workspaceId);
        } else if (change.type === 'agent' && change.state === 'connected') {
          retryWaiting(change.workspaceId);
        }
      });
      const running = await deps.db.selectFrom('workspaces').select('id').where('status', '=', 'running').execute();
      for (const { id } of running) await startFor(id).catch((error: unknown) => deps.log.warn({ err: error }, 'starting syncs failed'));
      retryTimer = setInterval(() => retryWaiting(), RETRY_MS);
      retryTimer.unref();
    },
    stop() {
      unsubscribe?.();
      clearInterval(retryTimer);
      for (const id of [...byWorkspace.keys()]) stopFor(id);
    },
  };
}

/** A sync the runtime meets by sharing the folder (capabilities.ts 'shared'): nothing to copy, and the status says why. */
function sharedStatus(spec: SyncSpec): SyncStatus {
  return {
    service: spec.service, from: spec.from, to: spec.to, mode: spec.mode ?? 'one-way', state: 'shared', watchMode: null, pendingFiles: 0, lastApplied: null, lastError: null,
    lastReturned: null, conflicts: 0, lastConflict: null, lastRestart: null, resentFiles: 0,
    watchMessage: `The ${spec.service} service runs in the workspace's own home on this runtime: ${spec.to} is ${spec.from} itself, so every edit is there at once and nothing is copied.`,
    sourceHash: null, targetHash: null, inSync: true, resyncs: 0,
  };
}

/** The syncs a workspace's template declares, in service order. */
async function syncSpecsOf(db: Kysely<Database>, workspaceId: string): Promise<SyncSpec[]> {
  const row = await db.selectFrom('workspaces').select('template_version_id').where('id', '=', workspaceId).executeTakeFirst();
  if (!row) return [];
  const version = await getTemplateVersionById(db, row.template_version_id);
  return syncSpecsOfTemplate(version?.spec);
}

export function syncSpecsOfTemplate(spec: TemplateSpec | undefined): SyncSpec[] {
  return Object.entries(spec?.environment?.services ?? {}).flatMap(([service, s]) => (s.sync ?? []).map((sync) => ({
    service,
    from: sync.from,
    to: sync.to,
    exclude: sync.exclude ?? [],
    mode: sync.mode,
    ...(s.afterSync && s.afterSync !== 'nothing' ? { afterSync: s.afterSync } : {}),
  })));
}
