import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { workspacePortsSchema } from '../../protocol/apps.ts';
import { errorEnvelopeSchema, isAppError } from '../../protocol/errors.ts';
import { workspaceParamsSchema } from '../../protocol/workspaces.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import type { DenBase } from '../base.ts';
import { principalOf } from '../http/auth-types.ts';
import { findWorkspaceFor } from '../workspaces/access.ts';
import { appUrl, templateApps } from './apps.ts';
import { listeningSockets, type ListeningSocket } from './listening.ts';

export interface AppRoutesOptions extends Pick<DenBase, 'store' | 'config'> {
  agents: AgentHub;
}

/**
 * GET /workspaces/:owner/:name/ports: the template's apps and the TCP ports that listen in the
 * workspace now (read through its agent on each call), each with its URL through den.
 */
export async function appRoutes(fastify: FastifyInstance, deps: AppRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  app.get('/workspaces/:owner/:name/ports', {
    config: { auth: 'user' },
    schema: {
      summary: 'The apps of a workspace and the ports listening in it, with their URLs',
      tags: ['workspaces'],
      params: workspaceParamsSchema,
      response: { 200: workspacePortsSchema, 401: errorEnvelopeSchema, 404: errorEnvelopeSchema },
    },
  }, async (request) => {
    const workspace = await findWorkspaceFor(deps.store.db, principalOf(request), request.params.owner, request.params.name);
    const owner = workspace.owner_name;
    const apps = await templateApps(deps.store.db, workspace.template_version_id);
    let sockets: ListeningSocket[] = [];
    let detected = true;
    try {
      sockets = await listeningSockets(deps.agents, workspace.id);
    } catch (error) {
      if (!isAppError(error) || error.code !== 'AGENT_NOT_CONNECTED') throw error;
      detected = false;
    }
    return {
      apps: apps.map((declared) => ({
        name: declared.name,
        ...(declared.displayName ? { displayName: declared.displayName } : {}),
        port: declared.port,
        url: appUrl(deps.config, owner, workspace.name, { app: declared.name }),
        share: 'owner' as const,
      })),
      ports: sockets.map((socket) => {
        const declared = apps.find((candidate) => candidate.port === socket.port);
        return { ...socket, url: appUrl(deps.config, owner, workspace.name, { port: socket.port }), ...(declared ? { app: declared.name } : {}) };
      }),
      detected,
    };
  });
}
