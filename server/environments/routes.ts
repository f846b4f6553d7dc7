import { PassThrough, Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Kysely } from 'kysely';
import { z } from 'zod';
import {
  environmentGrantListSchema, environmentGrantSchema, environmentLogsQuerySchema, environmentRunDetailSchema, environmentRunListSchema,
  environmentViewSchema, grantParamsSchema, groupGrantParamsSchema, runEntryParamsSchema, sharedEnvironmentListSchema, runHistoryQuerySchema, runIdParamsSchema, runTestQuerySchema,
  type RunStreamLine,
} from '../../protocol/environments.ts';
import { AppError, errorEnvelopeSchema, isAppError } from '../../protocol/errors.ts';
import type { EnvironmentSpec } from '../../protocol/template.ts';
import { workspaceParamsSchema } from '../../protocol/workspaces.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import { appUrl, namedApps, workspaceSpec } from '../apps/apps.ts';
import type { DenBase } from '../base.ts';
import { principalOf, type Principal } from '../http/auth-types.ts';
import type { Database } from '../store/schema.ts';
import { findWorkspaceFor, trackedWorkspace, type WorkspaceRow } from '../workspaces/access.ts';
import { logStreamLifetime } from '../workspaces/log-stream.ts';
import { getWorkspaceDto } from '../workspaces/queries.ts';
import { listServiceStatuses } from '../workspaces/service-status.ts';
import { runOnDemand, storedServiceVersions } from './entries.ts';
import {
  findEnvironmentFor, grantEnvironment, grantEnvironmentToGroup, hasGrant, listGrants, revokeEnvironment, revokeEnvironmentFromGroup, sharedWith, type Viewer,
} from './grants.ts';
import { mergedServiceLogs } from './logs.ts';
import { getRun, latestRuns, listRuns, runDto, type EntryKind, type RunSummary } from './runs.ts';

export interface EnvironmentRoutesOptions extends Pick<DenBase, 'store' | 'clock' | 'driver' | 'config'> {
  agents: AgentHub;
}

const errors = { 400: errorEnvelopeSchema, 401: errorEnvelopeSchema, 403: errorEnvelopeSchema, 404: errorEnvelopeSchema, 409: errorEnvelopeSchema };
const tags = ['environments'];
/** A run's live output held for a slow reader beyond this is dropped (the run's stored log keeps its tail). */
const RUN_STREAM_HIGH_WATER_BYTES = 1024 * 1024;
/** How long a run's response waits for its first line (or an early error) before it starts streaming anyway. */
const RUN_HEADERS_WAIT_MS = 1_000;
/** How often a teammate's followed log checks that the grant still stands. */
const GRANT_RECHECK_MS = 5_000;

/**
 * /api/v1/workspaces/:owner/:name/env[...]: the environment's view and merged logs (its owner,
 * and teammates with a grant, read-only and audited); tasks and tests run on demand, their
 * history and logs (who may exec in the workspace: its owner, or den's owner role); grants
 * (set by the workspace's owner alone, as shares are).
 */
export async function environmentRoutes(fastify: FastifyInstance, deps: EnvironmentRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const db = deps.store.db;
  const runDeps = { db, clock: deps.clock, agents: deps.agents, driver: deps.driver };
  const identity = (row: WorkspaceRow & { owner_name: string }) => ({ id: row.id, name: row.name, ownerId: row.owner_id, ownerName: row.owner_name });

  app.get('/workspaces/:owner/:name/env', {
    config: { auth: 'user' },
    schema: { tags, summary: 'The environment of a workspace: services with status and version, apps and service previews, tasks and tests with their latest runs (owner and teammates)', params: workspaceParamsSchema, response: { 200: environmentViewSchema, ...errors } },
  }, async (request) => {
    const { row, viewer } = await findEnvironmentFor(db, deps.clock, principalOf(request), request.params.owner, request.params.name, 'services and status');
    const environment = await environmentOf(db, row.template_version_id);
    const workspace = await getWorkspaceDto(db, row.id);
    const [services, versions, runs, apps] = await Promise.all([
      listServiceStatuses(db, workspace, (requests) => deps.driver.resolveEndpoints(identity(row), requests)),
      storedServiceVersions(db, row.id),
      latestRuns(db, row.id),
      namedApps(db, row.template_version_id),
    ]);
    const names = await usernames(db, [...runs.values()]);
    const entries = (kind: EntryKind, specs: Record<string, { service: string; oneOff?: boolean }> | undefined) => Object.entries(specs ?? {}).map(([name, spec]) => {
      const last = runs.get(`${kind}:${name}`);
      return { name, service: spec.service, oneOff: spec.oneOff === true, lastRun: last ? runDto(last, names.get(last.user_id ?? '') ?? null) : null };
    });
    return {
      workspace: `${row.owner_name}/${row.name}`,
      status: row.status,
      viewer,
      services: services.map((service) => ({ ...service, version: versions[service.name] ?? null })),
      apps: [
        ...apps.apps.map((declared) => ({ name: declared.name, port: declared.port, url: appUrl(deps.config, row.owner_name, row.name, { app: declared.name }) })),
        ...apps.previews.map((preview) => ({ name: preview.name, port: preview.port, service: preview.service, url: appUrl(deps.config, row.owner_name, row.name, { app: preview.name }) })),
      ],
      tasks: entries('task', environment?.tasks),
      tests: entries('test', environment?.tests),
    };
  });

  app.get('/workspaces/:owner/:name/env/logs', {
    config: { auth: 'user' },
    schema: { tags, summary: 'Logs of several services as NDJSON lines { service, at, stream, line } (owner and teammates); ?follow=1 streams', params: workspaceParamsSchema, querystring: environmentLogsQuerySchema, response: { ...errors } },
  }, async (request, reply) => {
    const principal = principalOf(request);
    const { row, viewer } = await findEnvironmentFor(db, deps.clock, principal, request.params.owner, request.params.name, 'service logs');
    const declared = Object.keys((await environmentOf(db, row.template_version_id))?.services ?? {});
    const asked = [request.query.service ?? []].flat().flatMap((value) => value.split(',')).map((value) => value.trim()).filter(Boolean);
    const label = `${row.owner_name}/${row.name}`;
    const unknown = asked.filter((service) => !declared.includes(service));
    if (unknown.length > 0) {
      throw new AppError('SERVICE_NOT_FOUND', declared.length > 0
        ? `Workspace ${label} has no service ${unknown.map((s) => `'${s}'`).join(', ')}; its services are ${declared.join(', ')}.`
        : `Workspace ${label} has no environment services, so there are no service logs. \`den logs ${label}\` shows its build log.`);
    }
    const services = asked.length > 0 ? [...new Set(asked)] : declared;
    if (services.length === 0) throw new AppError('SERVICE_NOT_FOUND', `Workspace ${label} has no environment services, so there are no service logs. \`den logs ${label}\` shows its build log.`);
    const follow = request.query.follow === '1' || request.query.follow === 'true';
    // the owner's stream ends as the owner's other streams do; a teammate's holds while the grant does (grantWatch)
    const lifetime = logStreamLifetime(request, reply, viewer === 'owner' ? trackedWorkspace(row) : { label, allows: () => true });
    const stillAllowed = grantWatch(viewer, () => hasGrant(db, row.id, principal.userId), lifetime.signal);
    const lines = await mergedServiceLogs(deps.driver, identity(row), services, {
      tail: request.query.tail, follow, signal: stillAllowed.signal, now: () => deps.clock.now(),
    });
    async function* ndjson() {
      if (follow) yield '\n'; // headers go with the first bytes (see workspaces/service-logs.ts)
      try {
        for await (const entry of lines) {
          if (lifetime.revoked() || stillAllowed.lost()) break;
          yield `${JSON.stringify(entry)}\n`;
        }
        const ended = lifetime.revoked() ?? (stillAllowed.lost() ? new AppError('WORKSPACE_NOT_FOUND', `Your grant on the environment of ${label} was revoked.`) : undefined);
        if (ended) yield `${JSON.stringify(ended.toEnvelope())}\n`;
      } finally {
        stillAllowed.stop();
      }
    }
    reply.header('cache-control', 'no-cache');
    if (follow) reply.header('x-accel-buffering', 'no');
    reply.type('application/x-ndjson');
    return (reply as FastifyReply).send(Readable.from(ndjson()));
  });

  for (const kind of ['task', 'test'] as const) {
    app.post(`/workspaces/:owner/:name/env/${kind}s/:entry/run`, {
      config: { auth: 'user' },
      schema: {
        tags,
        summary: kind === 'task'
          ? 'Run an environment task now in its service; NDJSON: output lines, then { type: result }'
          : 'Run an environment test in its service (a passed result of the same version is answered as cached unless ?force=1); NDJSON: output lines, then { type: result }',
        params: runEntryParamsSchema,
        querystring: runTestQuerySchema,
        response: { ...errors },
      },
    }, async (request, reply) => {
      const principal = principalOf(request);
      const row = await findWorkspaceFor(db, principal, request.params.owner, request.params.name);
      const label = `${row.owner_name}/${row.name}`;
      if (row.status !== 'running') {
        throw new AppError('WORKSPACE_NOT_RUNNING', `Workspace ${label} is ${row.status}; ${kind}s run in its running services. Start it with \`den start ${label} --wait\`.`);
      }
      const environment = await environmentOf(db, row.template_version_id);
      const force = request.query.force === '1' || request.query.force === 'true';
      return streamRun(request, reply, (emit, signal) => runOnDemand(runDeps, { id: row.id, label }, environment, kind, request.params.entry, {
        trigger: 'user', userId: principal.userId, force, signal, onLine: (stream, line) => emit({ type: 'output', stream, line }),
      }).then(({ run, cached }) => emit({ type: 'result', cached, run: runDto(run, principal.username) })));
    });
  }

  app.get('/workspaces/:owner/:name/env/runs', {
    config: { auth: 'user' },
    schema: { tags, summary: 'The task and test runs of a workspace, newest first (`den test WS --history`)', params: workspaceParamsSchema, querystring: runHistoryQuerySchema, response: { 200: environmentRunListSchema, ...errors } },
  }, async (request) => {
    const row = await findWorkspaceFor(db, principalOf(request), request.params.owner, request.params.name);
    const rows = await listRuns(db, row.id, request.query);
    const names = await usernames(db, rows);
    return { runs: rows.map((run) => runDto(run, names.get(run.user_id ?? '') ?? null)) };
  });

  app.get('/workspaces/:owner/:name/env/runs/:id', {
    config: { auth: 'user' },
    schema: { tags, summary: 'One task or test run with the kept tail of its output', params: runIdParamsSchema, response: { 200: environmentRunDetailSchema, ...errors } },
  }, async (request) => {
    const row = await findWorkspaceFor(db, principalOf(request), request.params.owner, request.params.name);
    const run = await getRun(db, row.id, request.params.id);
    const names = await usernames(db, [run]);
    return { ...runDto(run, names.get(run.user_id ?? '') ?? null), log: run.log };
  });

  app.get('/workspaces/:owner/:name/env/grants', {
    config: { auth: 'user' },
    schema: { tags, summary: 'The teammates who may see the environment read-only', params: workspaceParamsSchema, response: { 200: environmentGrantListSchema, ...errors } },
  }, async (request) => {
    const row = await findWorkspaceFor(db, principalOf(request), request.params.owner, request.params.name);
    return { grants: await listGrants(db, row.id) };
  });

  app.put('/workspaces/:owner/:name/env/grants/:user', {
    config: { auth: 'user' },
    schema: { tags, summary: 'Let a user see the environment read-only (services, status, logs, app URLs; never terminals, exec, files or secrets)', params: grantParamsSchema, response: { 200: environmentGrantSchema, ...errors } },
  }, async (request) => {
    const principal = principalOf(request);
    const row = await ownWorkspace(db, principal, request.params.owner, request.params.name, 'grant');
    return grantEnvironment(db, deps.clock, row, request.params.user, principal.username);
  });

  app.delete('/workspaces/:owner/:name/env/grants/:user', {
    config: { auth: 'user' },
    schema: { tags, summary: 'Take back a teammate\'s view of the environment', params: grantParamsSchema, response: { 204: z.null().describe('the grant is gone'), ...errors } },
  }, async (request, reply) => {
    const principal = principalOf(request);
    const row = await ownWorkspace(db, principal, request.params.owner, request.params.name, 'revoke');
    await revokeEnvironment(db, deps.clock, row, request.params.user, principal.username);
    return reply.code(204).send(null);
  });

  // under /grants/groups/ rather than beside /grants/:user: a group and a user may share a name
  app.put('/workspaces/:owner/:name/env/grants/groups/:group', {
    config: { auth: 'user' },
    schema: { tags, summary: 'Let the members of a group see the environment read-only (membership is read at each request)', params: groupGrantParamsSchema, response: { 200: environmentGrantSchema, ...errors } },
  }, async (request) => {
    const principal = principalOf(request);
    const row = await ownWorkspace(db, principal, request.params.owner, request.params.name, 'grant');
    return grantEnvironmentToGroup(db, deps.clock, row, request.params.group, principal.username);
  });

  app.delete('/workspaces/:owner/:name/env/grants/groups/:group', {
    config: { auth: 'user' },
    schema: { tags, summary: 'Take back a group\'s view of the environment', params: groupGrantParamsSchema, response: { 204: z.null().describe('the grant is gone'), ...errors } },
  }, async (request, reply) => {
    const principal = principalOf(request);
    const row = await ownWorkspace(db, principal, request.params.owner, request.params.name, 'revoke');
    await revokeEnvironmentFromGroup(db, deps.clock, row, request.params.group, principal.username);
    return reply.code(204).send(null);
  });

  app.get('/environments/shared', {
    config: { auth: 'user' },
    schema: { tags, summary: 'The environments others let you see read-only, directly or through one of your groups', response: { 200: sharedEnvironmentListSchema, ...errors } },
  }, async (request) => ({ environments: await sharedWith(db, principalOf(request).userId) }));
}

/** The workspace, for what only its owner may do (grants, as shares): den's owner role sees it but gets 403. */
async function ownWorkspace(db: Kysely<Database>, principal: Principal, owner: string, name: string, verb: string) {
  const row = await findWorkspaceFor(db, principal, owner, name);
  if (row.owner_id !== principal.userId) {
    throw new AppError('FORBIDDEN', `Only the owner of '${row.owner_name}/${row.name}' may ${verb} access to its environment; you are signed in as '${principal.username}'.`);
  }
  return row;
}

async function environmentOf(db: Kysely<Database>, templateVersionId: string): Promise<EnvironmentSpec | undefined> {
  return (await workspaceSpec(db, templateVersionId))?.environment;
}

async function usernames(db: Kysely<Database>, runs: readonly RunSummary[]): Promise<Map<string, string>> {
  const ids = [...new Set(runs.map((run) => run.user_id).filter((id): id is string => id !== null))];
  if (ids.length === 0) return new Map();
  const rows = await db.selectFrom('users').select(['id', 'username']).where('id', 'in', ids).execute();
  return new Map(rows.map((row) => [row.id, row.username]));
}

/**
 * A run's response: NDJSON lines as `work` emits them. An error before the first line is the
 * route's coded error; after it, the error's envelope is the last line (the client throws it).
 * The client going away ends the command (`signal`).
 */
async function streamRun(
  request: FastifyRequest, reply: FastifyReply,
  work: (emit: (line: RunStreamLine) => void, signal: AbortSignal) => Promise<void>,
): Promise<FastifyReply> {
  const abort = new AbortController();
  reply.raw.once('close', () => abort.abort());
  const out = new PassThrough();
  let dropped = 0;
  let started = false;
  let resolveStarted!: () => void;
  const firstLine = new Promise<void>((resolve) => { resolveStarted = resolve; });
  const emit = (line: RunStreamLine) => {
    started = true;
    resolveStarted();
    if (line.type === 'output' && out.writableLength > RUN_STREAM_HIGH_WATER_BYTES) {
      dropped += 1;
      return;
    }
    if (dropped > 0 && line.type === 'result') out.write(`${JSON.stringify({ type: 'output', stream: 'stderr', line: `den dropped ${dropped} lines here: the client read too slowly (the run's log keeps its tail).` })}\n`);
    out.write(`${JSON.stringify(line)}\n`);
  };
  const done = work(emit, abort.signal).then(
    () => { out.end(); },
    (error: unknown) => {
      if (!started) throw error;
      const envelope = isAppError(error) ? error.toEnvelope() : new AppError('INTERNAL', 'The run failed inside den; the server log has the details.').toEnvelope();
      if (!isAppError(error)) request.log.error({ err: error }, 'an environment run failed');
      out.end(`${JSON.stringify(envelope)}\n`);
    },
  );
  // Answer with an error while nothing was sent; otherwise stream. A command silent for longer
  // starts the stream with a keep-alive (a blank line, which readers skip), so no client waits
  // for headers until its own timeout.
  let timer: NodeJS.Timeout | undefined;
  const quiet = new Promise<void>((resolve) => { timer = setTimeout(resolve, RUN_HEADERS_WAIT_MS); });
  await Promise.race([firstLine, done, quiet]).finally(() => clearTimeout(timer));
  if (!started) {
    started = true;
    out.write('\n');
  }
  reply.header('cache-control', 'no-cache');
  reply.header('x-accel-buffering', 'no');
  reply.type('application/x-ndjson');
  return reply.send(out);
}

/** For a teammate: whether the grant still stands, checked every GRANT_RECHECK_MS; `signal` aborts when it is gone (or `parent` aborts). */
function grantWatch(viewer: Viewer, check: () => Promise<boolean>, parent: AbortSignal) {
  const abort = new AbortController();
  const forward = () => abort.abort();
  parent.addEventListener('abort', forward, { once: true });
  if (parent.aborted) abort.abort();
  let lost = false;
  const timer = viewer === 'teammate'
    ? setInterval(() => {
      void check().then((ok) => {
        if (ok) return;
        lost = true;
        abort.abort();
      }, () => undefined);
    }, GRANT_RECHECK_MS)
    : undefined;
  timer?.unref();
  return {
    signal: abort.signal,
    lost: () => lost,
    stop: () => {
      clearInterval(timer);
      parent.removeEventListener('abort', forward);
    },
  };
}
