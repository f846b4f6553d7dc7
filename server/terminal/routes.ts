import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError, errorEnvelopeSchema } from '../../protocol/errors.ts';
import { sessionIdSchema, terminalSessionListSchema } from '../../protocol/terminal.ts';
import { workspaceParamsSchema } from '../../protocol/workspaces.ts';
import { principalOf } from '../http/auth-types.ts';
import type { TrackedWorkspace } from '../auth/live-access.ts';
import { trackLiveAccess } from '../auth/plugin.ts';
import { workspaceDownError } from '../reconcile/health.ts';
import { findWorkspaceFor, trackedWorkspace } from '../workspaces/access.ts';
import type { DenBase } from '../base.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import { closeTerminalSession, listTerminalSessions } from './admin.ts';
import { relayTerminal, type TerminalWorkspace } from './relay.ts';

export interface TerminalRoutesOptions extends Pick<DenBase, 'store'> {
  agents: AgentHub;
  /** run at shutdown before the remaining websockets are closed, so a relay can tell its browser why */
  websocketShutdown: Set<() => void>;
}

const errors = { 400: errorEnvelopeSchema, 401: errorEnvelopeSchema, 403: errorEnvelopeSchema, 404: errorEnvelopeSchema, 409: errorEnvelopeSchema };
const sessionParamsSchema = workspaceParamsSchema.extend({ id: sessionIdSchema });

/**
 * The browser terminal (issue 3, docs/terminal.md):
 *  - GET  /workspaces/:owner/:name/terminal        websocket, protocol/terminal.ts, relayed to the agent
 *  - GET  /workspaces/:owner/:name/terminals       the agent's sessions
 *  - DELETE /workspaces/:owner/:name/terminals/:id hang one up
 * Authentication (API token, or the session cookie with the Origin check on upgrades) is the auth
 * plugin's; who may see the workspace is findWorkspaceFor's, checked before the upgrade.
 */
export async function terminalRoutes(fastify: FastifyInstance, deps: TerminalRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const workspaces = new WeakMap<FastifyRequest, { terminal: TerminalWorkspace; access: TrackedWorkspace }>();

  app.get('/workspaces/:owner/:name/terminal', {
    websocket: true,
    config: { auth: 'user' },
    schema: { params: workspaceParamsSchema },
    preHandler: async (request) => {
      const { owner, name } = request.params as z.infer<typeof workspaceParamsSchema>;
      const workspace = await findWorkspaceFor(deps.store.db, principalOf(request), owner, name);
      // running/agent state is reported inside the socket (`error` + close code), where a browser can read it
      workspaces.set(request, { terminal: { id: workspace.id, label: `${owner}/${name}`, status: workspace.status, down: workspaceDownError(workspace)?.message }, access: trackedWorkspace(workspace) });
    },
  }, (socket, request) => {
    const { terminal, access } = workspaces.get(request)!;
    const relay = relayTerminal(socket, deps.agents, terminal, request.log);
    // at shutdown a 4009 with SERVER_SHUTTING_DOWN tells the client to come back to the same session
    deps.websocketShutdown.add(relay.shutdown);
    // suspension, logout, a revoked token...: a 4001 with the error's code, and no more input reaches the shell
    const untrack = trackLiveAccess(request, access, relay.revoke);
    socket.once('close', () => {
      deps.websocketShutdown.delete(relay.shutdown);
      untrack();
    });
  });

  app.get('/workspaces/:owner/:name/terminals', {
    config: { auth: 'user' },
    schema: {
      summary: 'List the terminal sessions of a workspace',
      tags: ['terminal'],
      params: workspaceParamsSchema,
      response: { 200: terminalSessionListSchema, ...errors },
    },
  }, async (request) => {
    const workspaceId = await connectedWorkspace(deps, request, request.params);
    return listTerminalSessions(deps.agents, workspaceId);
  });

  app.delete('/workspaces/:owner/:name/terminals/:id', {
    config: { auth: 'user' },
    schema: {
      summary: 'End a terminal session (hang up its shell)',
      tags: ['terminal'],
      params: sessionParamsSchema,
      response: { 204: z.null().describe('the session is being hung up'), ...errors },
    },
  }, async (request, reply) => {
    const workspaceId = await connectedWorkspace(deps, request, request.params);
    await closeTerminalSession(deps.agents, workspaceId, request.params.id);
    return reply.code(204).send(null);
  });
}

/** The workspace's id when the caller may see it and its agent is connected; coded errors otherwise. */
async function connectedWorkspace(deps: TerminalRoutesOptions, request: FastifyRequest, params: { owner: string; name: string }): Promise<string> {
  const workspace = await findWorkspaceFor(deps.store.db, principalOf(request), params.owner, params.name);
  if (deps.agents.isConnected(workspace.id)) return workspace.id;
  if (workspace.status !== 'running' && workspace.status !== 'starting') {
    throw new AppError('WORKSPACE_NOT_RUNNING', `Workspace '${params.owner}/${params.name}' is ${workspace.status}, so it has no terminal sessions. Start it with \`den start ${params.name}\`.`);
  }
  throw workspaceDownError(workspace) ?? new AppError('AGENT_NOT_CONNECTED', `The agent of workspace '${params.owner}/${params.name}' is not connected right now. Wait a few seconds (it reconnects by itself) and try again.`);
}
