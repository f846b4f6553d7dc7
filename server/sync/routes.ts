import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { errorEnvelopeSchema } from '../../protocol/errors.ts';
import { syncRestartSchema, syncStatusListSchema } from '../../protocol/sync.ts';
import { workspaceParamsSchema } from '../../protocol/workspaces.ts';
import type { Database } from '../store/schema.ts';
import type { Kysely } from 'kysely';
import { findEnvironmentFor } from '../environments/grants.ts';
import { principalOf } from '../http/auth-types.ts';
import type { Clock } from '../store/time.ts';
import { findWorkspaceFor } from '../workspaces/access.ts';
import type { WorkspaceSyncs } from './service.ts';

export interface SyncRoutesOptions {
  store: { db: Kysely<Database> };
  clock: Clock;
  syncs: WorkspaceSyncs;
}

const errors = { 401: errorEnvelopeSchema, 403: errorEnvelopeSchema, 404: errorEnvelopeSchema };
const tags = ['workspaces'];

/**
 * /api/v1/workspaces/:owner/:name/sync: what each synced service's sync is doing (who may see
 * the workspace, and teammates with a grant on its environment, audited); restart (who may see
 * the workspace).
 */
export async function syncRoutes(fastify: FastifyInstance, deps: SyncRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();

  app.get('/workspaces/:owner/:name/sync', {
    config: { auth: 'user' },
    schema: { tags, summary: 'The live syncs of a running workspace: state, pending files, last applied change and its latency, both hashes, the last error', params: workspaceParamsSchema, response: { 200: syncStatusListSchema, ...errors } },
  }, async (request) => {
    const { row } = await findEnvironmentFor(deps.store.db, deps.clock, principalOf(request), request.params.owner, request.params.name, 'sync state');
    return { items: deps.syncs.status(row.id) };
  });

  app.post('/workspaces/:owner/:name/sync/restart', {
    config: { auth: 'user' },
    schema: { tags, summary: 'Starts a workspace\'s syncs (or one service\'s) again: a full copy, then watching', params: workspaceParamsSchema, body: syncRestartSchema, response: { 200: syncStatusListSchema, ...errors } },
  }, async (request) => {
    const row = await findWorkspaceFor(deps.store.db, principalOf(request), request.params.owner, request.params.name);
    await deps.syncs.restart(row.id, request.body.service);
    return { items: deps.syncs.status(row.id) };
  });
}
