import { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Kysely } from 'kysely';
import type { z } from 'zod';
import { AppError } from '../../protocol/errors.ts';
import type { serviceLogsParamsSchema, serviceLogsQuerySchema } from '../../protocol/services.ts';
import { principalOf } from '../http/auth-types.ts';
import type { DenBase } from '../base.ts';
import type { Database } from '../store/schema.ts';
import { getTemplateVersionById } from '../templates/store.ts';
import { findWorkspaceFor, trackedWorkspace } from './access.ts';
import { logStreamLifetime } from './log-stream.ts';

type ServiceLogsRequest = FastifyRequest<{
  Params: z.infer<typeof serviceLogsParamsSchema>;
  Querystring: z.infer<typeof serviceLogsQuerySchema>;
}>;

/**
 * GET /workspaces/:owner/:name/services/:service/logs: an environment service's output as NDJSON
 * lines ({ stream, line }), from the runtime (the container's log on docker, the service's log
 * file on process); ?tail=N starts with the last N lines, ?follow=1 keeps streaming until the
 * service ends or the client goes away. Who may read it is who may read the workspace.
 */
export function serviceLogsHandler(den: Pick<DenBase, 'store' | 'driver'>) {
  return (request: ServiceLogsRequest, reply: FastifyReply) => serveServiceLogs(den, request, reply);
}

async function serveServiceLogs(den: Pick<DenBase, 'store' | 'driver'>, request: ServiceLogsRequest, reply: FastifyReply): Promise<FastifyReply> {
  const { owner, name, service } = request.params;
  const row = await findWorkspaceFor(den.store.db, principalOf(request), owner, name);
  const services = await serviceNames(den.store.db, row.template_version_id);
  if (!services.includes(service)) throw unknownService(`${row.owner_name}/${row.name}`, service, services);

  const follow = request.query.follow === '1' || request.query.follow === 'true';
  const lifetime = logStreamLifetime(request, reply, trackedWorkspace(row));
  // Resolves before the first line: a workspace with no output answers with a coded error.
  const lines = await den.driver.serviceLogs(
    { id: row.id, name: row.name, ownerId: row.owner_id, ownerName: row.owner_name },
    service,
    { tail: request.query.tail, follow, signal: lifetime.signal },
  );
  async function* ndjson() {
    // Node sends the headers with the first bytes: a follower with nothing to show yet would
    // wait for them. A blank line is a keep-alive in NDJSON; readers skip it.
    if (follow) yield '\n';
    for await (const entry of lines) {
      if (lifetime.revoked()) break;
      yield `${JSON.stringify(entry)}\n`;
    }
    // the client reads an error envelope as the stream's last line and stops (client/workspaces.ts)
    const revoked = lifetime.revoked();
    if (revoked) yield `${JSON.stringify(revoked.toEnvelope())}\n`;
  }
  reply.header('cache-control', 'no-cache');
  if (follow) reply.header('x-accel-buffering', 'no');
  reply.type('application/x-ndjson');
  return reply.send(Readable.from(ndjson()));
}

/** The services the workspace's template version declares (what a runtime may have started). */
async function serviceNames(db: Kysely<Database>, versionId: string): Promise<string[]> {
  const version = await getTemplateVersionById(db, versionId);
  return Object.keys(version?.spec.environment?.services ?? {});
}

function unknownService(workspace: string, service: string, services: string[]): AppError {
  if (services.length === 0) {
    return new AppError('SERVICE_NOT_FOUND',
      `Workspace ${workspace} has no environment services, so there is no log of '${service}'. \`den logs ${workspace}\` shows its build log.`);
  }
  return new AppError('SERVICE_NOT_FOUND',
    `Workspace ${workspace} has no service '${service}'; its services are ${services.join(', ')}. Run \`den logs ${workspace} --service ${services[0]}\` for one of them.`);
}
