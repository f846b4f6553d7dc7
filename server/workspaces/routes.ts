import { listAgents } from '../agents/registry.ts';
import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError, errorEnvelopeSchema } from '../../protocol/errors.ts';
import {
  buildListSchema, buildLogsQuerySchema, buildParamsSchema, buildSchema, createWorkspaceSchema,
  listWorkspacesQuerySchema, startWorkspaceSchema, updateWorkspaceSchema, workspaceEventListSchema, workspaceListSchema,
  workspaceParamsSchema, workspaceSchema, workspaceWithBuildSchema,
} from '../../protocol/workspaces.ts';
import { principalOf } from '../http/auth-types.ts';
import { findUserByUsername } from '../users/users.ts';
import type { TrackedWorkspace } from '../auth/live-access.ts';
import { findWorkspaceFor, trackedWorkspace } from './access.ts';
import { listWorkspaceEvents } from './events.ts';
import { logStreamLifetime } from './log-stream.ts';
import { cachedListPage } from './list-cache.ts';
import { getBuildByNumber, getWorkspaceDto, listBuilds, listWorkspaces } from './queries.ts';
import { serviceLogsHandler } from './service-logs.ts';
import { listServiceStatuses } from './service-status.ts';
import { serviceLogsParamsSchema, serviceLogsQuerySchema } from '../../protocol/services.ts';
import { cancelBuild, createWorkspace, requestTransition, type TransitionRequest, type WorkspaceServiceDeps } from './service.ts';
import type { BuildLogs } from '../builds/logs.ts';

export type WorkspaceRoutesOptions = WorkspaceServiceDeps;

const errors = { 400: errorEnvelopeSchema, 401: errorEnvelopeSchema, 403: errorEnvelopeSchema, 404: errorEnvelopeSchema, 409: errorEnvelopeSchema };
const tags = ['workspaces'];

/** The workspace API: /api/v1/workspaces[/:owner/:name[/...]]. */
export async function workspaceRoutes(fastify: FastifyInstance, deps: WorkspaceRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();

  app.post('/workspaces', {
    config: { auth: 'user' },
    schema: { tags, summary: 'Create a workspace (queues its first start build)', body: createWorkspaceSchema, response: { 202: workspaceWithBuildSchema, ...errors } },
  }, async (request, reply) => {
    const result = await createWorkspace(deps, principalOf(request), request.body);
    return reply.status(202).send(result);
  });

  app.get('/workspaces', {
    config: { auth: 'user' },
    schema: { tags, summary: 'List workspaces (your own; the owner role may ask for ?all=1 or ?owner=)', querystring: listWorkspacesQuerySchema, response: { 200: workspaceListSchema, ...errors } },
  }, async (request, reply) => {
    const principal = principalOf(request);
    const { owner, all, limit, offset } = request.query;
    const everyone = all === '1' || all === 'true';
    let ownerId: string | undefined = principal.userId;
    if ((everyone || (owner && owner !== principal.username)) && principal.role !== 'owner') {
      throw new AppError('FORBIDDEN', 'Only the owner role may list other users\' workspaces. Leave out ?owner and ?all to list your own.');
    }
    if (everyone) ownerId = undefined;
    else if (owner && owner !== principal.username) {
      const user = await findUserByUsername(deps.store.db, owner);
      if (!user) throw new AppError('USER_NOT_FOUND', `There is no user '${owner}'. Run \`den users list\` to see the users.`);
      ownerId = user.id;
    }
    const store = deps.store;
    const body = await cachedListPage(store, `${ownerId ?? '*'} ${limit} ${offset}`, async () => {
      const { workspaces, total } = await listWorkspaces(store.db, { ownerId, limit, offset });
      return { workspaces, total, limit, offset };
    });
    // Already JSON (built from typed rows; queries.test.ts checks it against workspaceListSchema,
    // which still documents the route): sent as bytes, past the response serializer.
    return (reply as FastifyReply).type('application/json; charset=utf-8').send(body);
  });

  app.get('/workspaces/:owner/:name', {
    config: { auth: 'user' },
    schema: { tags, summary: 'Show a workspace with its latest build', params: workspaceParamsSchema, response: { 200: workspaceSchema, ...errors } },
  }, async (request) => {
    const row = await findWorkspaceFor(deps.store.db, principalOf(request), request.params.owner, request.params.name);
    const dto = await getWorkspaceDto(deps.store.db, row.id);
    const identity = { id: row.id, name: row.name, ownerId: row.owner_id, ownerName: row.owner_name };
    const services = await listServiceStatuses(deps.store.db, dto, (requests) => deps.driver.resolveEndpoints(identity, requests));
    return { ...dto, isolation: deps.driver.isolation, agents: await listAgents(deps.store.db, row.id), services };
  });

  const transition = (kind: 'start' | 'stop' | 'restart' | 'update', summary: string, body: z.ZodType<{ params?: Record<string, unknown> } | undefined>) =>
    app.post(`/workspaces/:owner/:name/${kind}`, {
      config: { auth: 'user' },
      schema: { tags, summary, params: workspaceParamsSchema, body: body.optional(), response: { 202: workspaceWithBuildSchema, ...errors } },
    }, async (request, reply) => {
      const { params: path } = request as FastifyRequest<{ Params: z.infer<typeof workspaceParamsSchema> }>;
      const principal = principalOf(request);
      const row = await findWorkspaceFor(deps.store.db, principal, path.owner, path.name);
      const params = ((request.body as { params?: Record<string, unknown> } | undefined)?.params) ?? {};
      const change: TransitionRequest = kind === 'stop' ? { kind } : { kind, params };
      return reply.status(202).send(await requestTransition(deps, principal, row, change));
    });
  transition('start', 'Start a stopped workspace (ephemeral parameters may be given)', startWorkspaceSchema);
  transition('stop', 'Stop a workspace (its home is kept)', z.object({}).passthrough());
  transition('restart', 'Stop, then start a workspace', startWorkspaceSchema);
  transition('update', 'Move a workspace to the template\'s active version (with parameter changes)', updateWorkspaceSchema);

  app.delete('/workspaces/:owner/:name', {
    config: { auth: 'user' },
    schema: { tags, summary: 'Delete a workspace and its home', params: workspaceParamsSchema, response: { 202: workspaceWithBuildSchema, ...errors } },
  }, async (request, reply) => {
    const principal = principalOf(request);
    const row = await findWorkspaceFor(deps.store.db, principal, request.params.owner, request.params.name);
    return reply.status(202).send(await requestTransition(deps, principal, row, { kind: 'delete' }));
  });

  app.post('/workspaces/:owner/:name/cancel', {
    config: { auth: 'user' },
    schema: { tags, summary: 'Cancel the workspace\'s queued or running build (a running one is aborted and leaves the workspace failed)', params: workspaceParamsSchema, response: { 202: workspaceWithBuildSchema, ...errors } },
  }, async (request, reply) => {
    const principal = principalOf(request);
    const row = await findWorkspaceFor(deps.store.db, principal, request.params.owner, request.params.name);
    return reply.status(202).send(await cancelBuild(deps, principal, row));
  });

  app.get('/workspaces/:owner/:name/builds', {
    config: { auth: 'user' },
    schema: { tags, summary: 'The workspace\'s builds, newest first', params: workspaceParamsSchema, response: { 200: buildListSchema, ...errors } },
  }, async (request) => {
    const row = await findWorkspaceFor(deps.store.db, principalOf(request), request.params.owner, request.params.name);
    return { builds: await listBuilds(deps.store.db, row.id) };
  });

  app.get('/workspaces/:owner/:name/events', {
    config: { auth: 'user' },
    schema: { tags, summary: 'What happened to the workspace that its owner should know (its agent, container or a service died or recovered, an agent connection replaced, an agent protocol violation), newest first', params: workspaceParamsSchema, response: { 200: workspaceEventListSchema, ...errors } },
  }, async (request) => {
    const row = await findWorkspaceFor(deps.store.db, principalOf(request), request.params.owner, request.params.name);
    return { events: await listWorkspaceEvents(deps.store.db, row.id) };
  });

  app.get('/workspaces/:owner/:name/builds/:number', {
    config: { auth: 'user' },
    schema: { tags, summary: 'One build with its step timings', params: buildParamsSchema, response: { 200: buildSchema, ...errors } },
  }, async (request) => {
    const row = await findWorkspaceFor(deps.store.db, principalOf(request), request.params.owner, request.params.name);
    return getBuildByNumber(deps.store.db, row.id, request.params.number);
  });

  app.get('/workspaces/:owner/:name/builds/:number/logs', {
    config: { auth: 'user' },
    schema: {
      tags,
      summary: 'A build\'s log as JSON lines; ?follow=1 streams live lines (NDJSON, or SSE with ?format=sse or Accept: text/event-stream) until the build finishes',
      params: buildParamsSchema,
      querystring: buildLogsQuerySchema,
    },
  }, async (request, reply) => {
    const row = await findWorkspaceFor(deps.store.db, principalOf(request), request.params.owner, request.params.name);
    const build = await getBuildByNumber(deps.store.db, row.id, request.params.number);
    const follow = request.query.follow === '1' || request.query.follow === 'true';
    const sse = request.query.format === 'sse' || (request.query.format === undefined && (request.headers.accept ?? '').includes('text/event-stream'));
    return streamLogs(deps.builds.logs, request, reply, trackedWorkspace(row), build.id, request.query.after, follow, sse);
  });

  app.get('/workspaces/:owner/:name/services/:service/logs', {
    config: { auth: 'user' },
    schema: {
      tags,
      summary: 'An environment service\'s output as NDJSON lines ({ stream, line }); ?tail=N starts with the last N lines, ?follow=1 streams live lines until the service ends',
      params: serviceLogsParamsSchema,
      querystring: serviceLogsQuerySchema,
    },
  }, serviceLogsHandler(deps));
}

function streamLogs(logs: BuildLogs, request: FastifyRequest, reply: FastifyReply, workspace: TrackedWorkspace, buildId: string, after: number, follow: boolean, sse: boolean) {
  const lifetime = logStreamLifetime(request, reply, workspace);
  async function* lines() {
    if (follow) {
      for await (const line of logs.follow(buildId, after, { signal: lifetime.signal })) {
        if (lifetime.revoked()) break;
        yield sse ? `id: ${line.id}\ndata: ${JSON.stringify(line)}\n\n` : `${JSON.stringify(line)}\n`;
      }
      // the client reads an error envelope as the stream's last event and stops (client/workspaces.ts)
      const revoked = lifetime.revoked();
      if (revoked) yield sse ? `event: error\ndata: ${JSON.stringify(revoked.toEnvelope())}\n\n` : `${JSON.stringify(revoked.toEnvelope())}\n`;
      else if (sse) yield 'event: end\ndata: {}\n\n';
    } else {
      for (const line of await logs.read(buildId, after)) yield `${JSON.stringify(line)}\n`;
    }
  }
  reply.header('cache-control', 'no-cache');
  if (follow) reply.header('x-accel-buffering', 'no');
  reply.type(sse ? 'text/event-stream' : 'application/x-ndjson');
  return reply.send(Readable.from(lines()));
}
