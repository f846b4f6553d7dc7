import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError, errorEnvelopeSchema } from '../../protocol/errors.ts';
import { sessionIdSchema, terminalSessionListSchema } from '../../protocol/terminal.ts';
import { agentQuerySchema, workspaceParamsSchema } from '../../protocol/workspaces.ts';
import { principalOf } from '../http/auth-types.ts';
import type { TrackedWorkspace } from '../auth/live-access.ts';
import { trackLiveAccess } from '../auth/plugin.ts';
import { workspaceDownError } from '../reconcile/health.ts';
import { findWorkspaceFor, trackedWorkspace } from '../workspaces/access.ts';
import type { DenBase } from '../base.ts';
import type { AgentHub, AgentRef } from '../agents/hub-types.ts';
import { assertServiceAgent, reachableAgent } from '../agents/reachable.ts';
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
 * Each takes `?service=NAME` to reach the agent beside that service instead of the workspace's.
 * Authentication (API token, or the session cookie with the Origin check on upgrades) is the auth
 * plugin's; who may see the workspace is findWorkspaceFor's, checked before the upgrade.
 */
export async function terminalRoutes(fastify: FastifyInstance, deps: TerminalRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const workspaces = new WeakMap<FastifyRequest, { terminal: TerminalWorkspace; access: TrackedWorkspace }>();

  app.get('/workspaces/:owner/:name/terminal', {
    websocket: true,
    config: { auth: 'user' },
    schema: { params: workspaceParamsSchema, querystring: agentQuerySchema },
    preHandler: async (request) => {
      const { owner, name } = request.params as z.infer<typeof workspaceParamsSchema>;
      const { service } = request.query as z.infer<typeof agentQuerySchema>;
      const workspace = await findWorkspaceFor(deps.store.db, principalOf(request), owner, name);
      if (service !== undefined) await assertServiceAgent(deps.store.db, workspace, service);
      // running/agent state is reported inside the socket (`error` + close code), where a browser can read it
      workspaces.set(request, {
        terminal: { id: workspace.id, ...(service ? { service } : {}), label: `${owner}/${name}`, status: workspace.status, down: workspaceDownError(workspace)?.message },
        access: trackedWorkspace(workspace),
      });
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
      querystring: agentQuerySchema,
      response: { 200: terminalSessionListSchema, ...errors },
    },
  }, async (request) => {
    const agent = await connectedAgent(deps, request, request.params, request.query.service);
    return listTerminalSessions(deps.agents, agent);
  });

  app.delete('/workspaces/:owner/:name/terminals/:id', {
    config: { auth: 'user' },
    schema: {
      summary: 'End a terminal session (hang up its shell)',
      tags: ['terminal'],
      params: sessionParamsSchema,
      querystring: agentQuerySchema,
      response: { 204: z.null().describe('the session is being hung up'), ...errors },
    },
  }, async (request, reply) => {
    const agent = await connectedAgent(deps, request, request.params, request.query.service);
    await closeTerminalSession(deps.agents, agent, request.params.id);
    return reply.code(204).send(null);
  });
}

/** The agent when the caller may see the workspace and the agent is connected; coded errors otherwise. */
async function connectedAgent(deps: TerminalRoutesOptions, request: FastifyRequest, params: { owner: string; name: string }, service: string | undefined): Promise<AgentRef> {
  const workspace = await findWorkspaceFor(deps.store.db, principalOf(request), params.owner, params.name);
  return reachableAgent(deps.store.db, deps.agents, workspace, service, `, so it has no terminal sessions. Start it with \`den start ${params.name}\`.`);
}
