import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { shareBodySchema, shareParamsSchema, shareSchema, workspacePortsSchema } from '../../protocol/apps.ts';
import { AppError, errorEnvelopeSchema, isAppError } from '../../protocol/errors.ts';
import { workspaceParamsSchema } from '../../protocol/workspaces.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import type { DenBase } from '../base.ts';
import { principalOf } from '../http/auth-types.ts';
import { findWorkspaceFor } from '../workspaces/access.ts';
import { appUrl, checkAppName, namedApps } from './apps.ts';
import { appHealth } from './health.ts';
import { listeningSockets, type ListeningSocket } from './listening.ts';
import { effectiveShare, setShare, type ShareTarget } from './shares.ts';

export interface AppRoutesOptions extends Pick<DenBase, 'store' | 'config' | 'clock'> {
  agents: AgentHub;
}

/**
 * GET /workspaces/:owner/:name/ports: the template's apps, its environment services' preview
 * URLs and the TCP ports that listen in the workspace now (read through its agent on each call),
 * each with its URL through den, and each checked app's health.
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
    const { apps, previews } = await namedApps(deps.store.db, workspace.template_version_id);
    const health = await appHealth(deps.store.db, workspace, apps);
    let sockets: ListeningSocket[] = [];
    let detected = true;
    try {
      sockets = await listeningSockets(deps.agents, workspace.id);
    } catch (error) {
      if (!isAppError(error) || error.code !== 'AGENT_NOT_CONNECTED') throw error;
      detected = false;
    }
    const shareOf = (target: ShareTarget) => effectiveShare(deps.store.db, workspace, target);
    return {
      apps: await Promise.all([
        ...apps.map(async (declared) => ({
          name: declared.name,
          ...(declared.displayName ? { displayName: declared.displayName } : {}),
          port: declared.port,
          url: appUrl(deps.config, owner, workspace.name, { app: declared.name }),
          share: await shareOf({ app: declared.name }),
          ...(health.has(declared.name) ? { health: health.get(declared.name) } : {}),
        })),
        ...previews.map(async (preview) => ({
          name: preview.name,
          port: preview.port,
          service: preview.service,
          url: appUrl(deps.config, owner, workspace.name, { app: preview.name }),
          share: await shareOf({ app: preview.name }),
        })),
      ]),
      ports: await Promise.all(sockets.map(async (socket) => {
        const declared = apps.find((candidate) => candidate.port === socket.port);
        return { ...socket, url: appUrl(deps.config, owner, workspace.name, { port: socket.port }), ...(declared ? { app: declared.name } : {}), share: await shareOf({ port: socket.port }) };
      })),
      detected,
    };
  });

  app.put('/workspaces/:owner/:name/shares/:target', {
    config: { auth: 'user' },
    schema: {
      summary: 'Share an app or port of a workspace: with its owner only, every signed-in user, or anyone with the URL (subdomain mode)',
      tags: ['workspaces'],
      params: shareParamsSchema,
      body: shareBodySchema,
      response: { 200: shareSchema, 400: errorEnvelopeSchema, 401: errorEnvelopeSchema, 403: errorEnvelopeSchema, 404: errorEnvelopeSchema },
    },
  }, async (request) => {
    const principal = principalOf(request);
    const workspace = await findWorkspaceFor(deps.store.db, principal, request.params.owner, request.params.name);
    const label = `${workspace.owner_name}/${workspace.name}`;
    if (workspace.owner_id !== principal.userId) {
      throw new AppError('FORBIDDEN', `Only the owner of '${label}' may share its apps; you are signed in as '${principal.username}'.`);
    }
    const raw = request.params.target;
    const target: ShareTarget = /^\d+$/.test(raw) ? { port: Number(raw) } : { app: raw };
    if ('port' in target && (target.port < 1 || target.port > 65535)) throw new AppError('BAD_REQUEST', `'${raw}' is not a port. Use a number from 1 to 65535.`);
    if ('app' in target) await checkAppName(deps.store.db, workspace.template_version_id, target.app);
    await setShare(deps.store.db, deps.clock, { ...workspace, label }, target, request.body.level, principal.username);
    return { target: raw, level: await effectiveShare(deps.store.db, workspace, target), url: appUrl(deps.config, workspace.owner_name, workspace.name, target) };
  });
}
