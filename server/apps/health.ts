import { request as httpRequest } from 'node:http';
import type { Socket } from 'node:net';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { AppHealthDto } from '../../protocol/apps.ts';
import { isAppError } from '../../protocol/errors.ts';
import type { AppSpec, TemplateSpec } from '../../protocol/template-fields.ts';
import { parseDuration } from '../../protocol/template-units.ts';
import type { AgentHub, AgentTarget } from '../agents/hub-types.ts';
import { openTcpStream } from '../agents/tcp-stream.ts';
import type { AppHealthTable, Database } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';

/** How often the monitor looks for workspaces to check; each app is checked at its own interval. */
const SCAN_MS = 1_000;
/** a template's interval below this is raised to it: a check costs a channel through the agent */
const MIN_INTERVAL_MS = 1_000;
/** a check that has no response head by then failed (and never runs past its app's interval) */
const MAX_CHECK_MS = 10_000;
/** checks in flight in this replica at most: past it, due checks wait for the next scan */
const MAX_IN_FLIGHT = 64;
/** template versions whose parsed apps are remembered (a scan parses each version once) */
const MAX_CACHED_VERSIONS = 500;

export type AppHealthState = 'healthy' | 'unhealthy' | 'unknown';

export interface AppHealthDeps {
  db: Kysely<Database>;
  clock: Clock;
  log: Logger;
  /** opens the checks' channels (any replica's agent) */
  agents: AgentHub;
  /** the agents connected to this replica: it checks their workspaces, and no other replica does */
  localAgents: { isConnected(agent: AgentTarget): boolean };
}

export interface AppHealthMonitor {
  start(): void;
  /** Stops scanning; checks in flight end on their own timeout. */
  stop(): void;
  /** One scan (the loop's body; tests call it to not wait for the timer). Resolves once the checks it started are done. */
  tick(): Promise<void>;
}

interface Watched {
  failures: number;
  state: AppHealthState;
  nextAt: number;
  inFlight: boolean;
}

/**
 * Health checks of the apps a template declares with `healthcheck` (docs/apps.md): each app of
 * a running workspace whose agent is connected to this replica gets `GET path` at its interval,
 * through the agent's tcp channel like the app proxy's requests. A 2xx or 3xx answer is healthy;
 * `threshold` failures in a row (no connection, no answer within min(interval, 10 s), any other
 * status) are unhealthy. One check per app at a time and at most MAX_IN_FLIGHT per replica: a
 * slow app delays its own checks, never piles them up. A change is written to `app_health`, so
 * every replica shows it; the rows of a workspace that stops being checked here are deleted.
 */
export function createAppHealthMonitor(deps: AppHealthDeps): AppHealthMonitor {
  const watched = new Map<string, Watched>();
  const versions = new Map<string, AppSpec[]>();
  let inFlight = 0;
  let timer: NodeJS.Timeout | undefined;
  let scanning: Promise<void> | undefined;

  async function scan(): Promise<void> {
    const rows = await deps.db.selectFrom('workspaces')
      .innerJoin('template_versions', 'template_versions.id', 'workspaces.template_version_id')
      .select(['workspaces.id', 'workspaces.template_version_id', 'template_versions.spec_json'])
      .where('workspaces.status', '=', 'running')
      .where('workspaces.deleted_at', 'is', null)
      .where('template_versions.spec_json', 'like', '%"healthcheck"%')
      .execute();
    const now = deps.clock.now().getTime();
    const seen = new Set<string>();
    const checks: Promise<void>[] = [];
    for (const row of rows) {
      if (!deps.localAgents.isConnected(row.id)) continue;
      for (const app of checkedApps(row.template_version_id, row.spec_json)) {
        const key = `${row.id}/${app.name}`;
        seen.add(key);
        let entry = watched.get(key);
        if (!entry) {
          entry = { failures: 0, state: 'unknown', nextAt: now, inFlight: false };
          watched.set(key, entry);
        }
        if (entry.inFlight || entry.nextAt > now || inFlight >= MAX_IN_FLIGHT) continue;
        checks.push(check(row.id, app, entry));
      }
    }
    const gone = new Set<string>();
    for (const key of watched.keys()) {
      if (seen.has(key)) continue;
      watched.delete(key);
      gone.add(key.slice(0, key.indexOf('/')));
    }
    // not checked here any more (stopped, agent gone or moved): what this replica wrote is stale
    if (gone.size > 0) await deps.db.deleteFrom('app_health').where('workspace_id', 'in', [...gone]).execute();
    await Promise.all(checks);
  }

  async function check(workspaceId: string, app: AppSpec, entry: Watched): Promise<void> {
    const healthcheck = app.healthcheck!;
    const intervalMs = Math.max(MIN_INTERVAL_MS, parseDuration(healthcheck.interval) ?? MIN_INTERVAL_MS);
    entry.inFlight = true;
    inFlight++;
    try {
      const failure = await probe(deps.agents, workspaceId, app.port, healthcheck.path, Math.min(intervalMs, MAX_CHECK_MS));
      entry.failures = failure === undefined ? 0 : entry.failures + 1;
      const next: AppHealthState = failure === undefined ? 'healthy' : entry.failures >= healthcheck.threshold ? 'unhealthy' : entry.state;
      if (next !== entry.state && next !== 'unknown') {
        entry.state = next;
        await record(workspaceId, app.name, next, failure ?? null);
      }
    } catch (error) {
      deps.log.warn({ err: error, workspaceId, app: app.name }, 'recording an app health check failed');
    } finally {
      entry.inFlight = false;
      entry.nextAt = deps.clock.now().getTime() + intervalMs;
      inFlight--;
    }
  }

  async function record(workspaceId: string, app: string, state: AppHealthTable['state'], message: string | null): Promise<void> {
    const since = iso(deps.clock.now());
    await deps.db.insertInto('app_health')
      .values({ workspace_id: workspaceId, app, state, message, since })
      .onConflict((conflict) => conflict.columns(['workspace_id', 'app']).doUpdateSet({ state, message, since }))
      .execute();
  }

  /** the apps of a version that declare a health check, parsed once per version */
  function checkedApps(versionId: string, specJson: string): AppSpec[] {
    let apps = versions.get(versionId);
    if (!apps) {
      const spec = JSON.parse(specJson) as Partial<TemplateSpec>;
      apps = (spec.workspace?.apps ?? []).filter((app) => app.healthcheck !== undefined);
      if (versions.size >= MAX_CACHED_VERSIONS) versions.clear();
      versions.set(versionId, apps);
    }
    return apps;
  }

  function tick(): Promise<void> {
    // one scan at a time: a slow store or slow checks delay the next scan instead of doubling it
    scanning ??= scan()
      .catch((error: unknown) => deps.log.warn({ err: error }, 'the app health scan failed'))
      .finally(() => { scanning = undefined; });
    return scanning;
  }

  return {
    start() {
      timer = setInterval(() => {
        if (!scanning) void tick();
      }, SCAN_MS);
      timer.unref();
    },
    stop() {
      clearInterval(timer);
    },
    tick,
  };
}

/**
 * One check: `GET path` to `port` in the workspace through its agent; undefined when the app
 * answers 2xx or 3xx within `timeoutMs`, else a sentence saying what went wrong.
 */
export async function probe(agents: AgentHub, workspaceId: string, port: number, path: string, timeoutMs: number): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined;
  let over = false;
  let cleanup = () => {};
  const timedOut = new Promise<string>((resolve) => {
    timer = setTimeout(() => {
      over = true;
      cleanup();
      resolve(`GET ${path} had no answer within ${timeoutMs / 1000} s`);
    }, timeoutMs);
  });
  const attempt = (async () => {
    let tcp;
    try {
      tcp = await openTcpStream(agents, workspaceId, { port });
    } catch (error) {
      if (isAppError(error) && error.code === 'TCP_CONNECT_FAILED') return `nothing listens on port ${port}`;
      return isAppError(error) ? error.message : `port ${port} could not be reached`;
    }
    const stream = tcp;
    // opened after the check timed out: nobody reads it
    if (over) {
      stream.stdio.destroy();
      return undefined;
    }
    return new Promise<string | undefined>((resolve) => {
      const request = httpRequest({
        method: 'GET', path, headers: { host: `localhost:${port}`, 'user-agent': 'den-healthcheck', connection: 'close' },
        createConnection: () => stream.stdio as Socket,
      });
      cleanup = () => {
        request.destroy();
        stream.stdio.destroy();
      };
      request.on('response', (response) => {
        const status = response.statusCode ?? 0;
        cleanup();
        resolve(status >= 200 && status < 400 ? undefined : `GET ${path} answered ${status}`);
      });
      request.on('error', () => {
        cleanup();
        resolve(`GET ${path}: the app closed the connection without answering`);
      });
      request.end();
    });
  })();
  try {
    return await Promise.race([attempt, timedOut]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The health of each app of `apps` that declares a health check, as the API shows it: the last
 * recorded state while the workspace runs, `unknown` before its first check and whenever the
 * workspace is not running.
 */
export async function appHealth(db: Kysely<Database>, workspace: { id: string; status: string }, apps: readonly AppSpec[]): Promise<Map<string, AppHealthDto>> {
  const checked = apps.filter((app) => app.healthcheck !== undefined);
  const out = new Map<string, AppHealthDto>(checked.map((app) => [app.name, { state: 'unknown' }]));
  if (checked.length === 0 || workspace.status !== 'running') return out;
  const rows = await db.selectFrom('app_health').select(['app', 'state', 'message', 'since']).where('workspace_id', '=', workspace.id).execute();
  for (const row of rows) {
    if (out.has(row.app)) out.set(row.app, { state: row.state, ...(row.message ? { message: row.message } : {}), since: row.since });
  }
  return out;
}
