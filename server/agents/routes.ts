import { MAIN_AGENT } from '../../protocol/agent.ts';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../protocol/errors.ts';
import { setTransport } from '../../protocol/tick-cork.ts';
import { agentQuerySchema, workspaceParamsSchema } from '../../protocol/workspaces.ts';
import { principalOf } from '../http/auth-types.ts';
import type { TrackedWorkspace } from '../auth/live-access.ts';
import { trackLiveAccess } from '../auth/plugin.ts';
import { findWorkspaceFor, trackedWorkspace } from '../workspaces/access.ts';
import type { AgentDownload } from '../runtimes/agent-download.ts';
import { relayExec } from './exec-relay.ts';
import { agentSocketWorkspace } from './socket-gate.ts';
import type { DenBase } from '../base.ts';
import type { LocalAgentHub } from './hub.ts';
import type { AgentRef } from './hub-types.ts';
import { reachableAgent } from './reachable.ts';
import { authenticateAgent, type AgentIdentity } from './tokens.ts';

export interface AgentRoutesOptions extends Pick<DenBase, 'store'> {
  /** the hub of this process: agents that connect here are accepted into it */
  agents: LocalAgentHub;
  /** the bundle served at /agent/bundle (the same whose checksum plans name) */
  agentBundle: AgentDownload;
}

const connectQuerySchema = z.object({
  /** optional: the workspace id the agent believes it serves; must match its token */
  workspace: z.string().max(64).optional(),
  /** optional: the agent it believes it is ('main' or a service's); must match its token */
  agent: z.string().max(64).optional(),
});

/**
 * The agent link endpoint and the user's exec websocket.
 *  - GET /api/v1/agent/connect: public at the HTTP layer; the agent token (Authorization:
 *    Bearer) is checked before the upgrade, so a bad token gets a 401 envelope, not a socket.
 *  - GET /api/v1/agent/bundle: the agent bundle as a tar, for the agent token of any live
 *    workspace; header x-den-agent-sha256 carries the checksum.
 *  - GET /api/v1/workspaces/:owner/:name/exec[?service=NAME]: a signed-in user with access to
 *    the workspace; relays an exec channel (protocol/exec.ts) to its main agent, or to the agent
 *    beside service NAME.
 */
export async function agentRoutes(fastify: FastifyInstance, deps: AgentRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const identities = new WeakMap<FastifyRequest, AgentIdentity>();
  const workspaces = new WeakMap<FastifyRequest, { agent: AgentRef; access: TrackedWorkspace }>();

  app.get('/agent/connect', {
    websocket: true,
    config: { auth: 'public' },
    schema: { querystring: connectQuerySchema },
    preValidation: async (request) => {
      const token = bearer(request.headers.authorization);
      const identity = token ? await authenticateAgent(deps.store.db, token) : undefined;
      const query = request.query as z.infer<typeof connectQuerySchema>;
      // On a workspace's agent socket, only that workspace's token is accepted.
      const boundTo = agentSocketWorkspace(request);
      if (!identity || (query.workspace && query.workspace !== identity.workspaceId) || (boundTo !== undefined && boundTo !== identity.workspaceId)) {
        throw new AppError('AGENT_UNAUTHORIZED', 'The agent token is unknown, revoked or for another workspace. Restart the workspace to issue a new one.');
      }
      // Each agent has its own token: one agent's token never connects as another.
      if (query.agent !== undefined && query.agent !== identity.agentName) {
        throw new AppError('AGENT_UNAUTHORIZED', `This token belongs to ${identity.agentName === MAIN_AGENT ? 'the workspace agent' : `the agent of service ${identity.agentName}`}, not to agent '${query.agent}': each agent connects with its own token. Restart the workspace to issue new ones.`);
      }
      identities.set(request, identity);
    },
  }, (socket, request) => {
    // the link's frames of one tick leave in one write (protocol/tick-cork.ts): ws writes to the upgrade's socket
    setTransport(socket, request.raw.socket);
    deps.agents.accept(socket, identities.get(request)!, request.ip);
  });

  // Kubernetes init containers (and any runtime that cannot mount den's files) fetch the agent
  // here with the workspace's agent token, and check the sha256 before unpacking.
  app.get('/agent/bundle', {
    config: { auth: 'public' },
    schema: { hide: true },
    preValidation: async (request) => {
      const token = bearer(request.headers.authorization);
      if (!token || !(await authenticateAgent(deps.store.db, token))) {
        // any live workspace's token will do here, so "for another workspace" does not apply
        throw new AppError('AGENT_UNAUTHORIZED', 'The agent bundle is served only to the agent token of a running workspace (Authorization: Bearer). Restart the workspace to issue a new one.');
      }
    },
  }, async (_request, reply) => {
    const archive = await deps.agentBundle.archive();
    return reply
      .header('content-type', 'application/x-tar')
      .header('content-length', archive.size)
      .header('x-den-agent-sha256', archive.sha256)
      .header('etag', `"${archive.sha256}"`)
      .send(deps.agentBundle.open(archive));
  });

  app.get('/workspaces/:owner/:name/exec', {
    websocket: true,
    config: { auth: 'user' },
    schema: { params: workspaceParamsSchema, querystring: agentQuerySchema },
    preHandler: async (request) => {
      const { owner, name } = request.params as z.infer<typeof workspaceParamsSchema>;
      const { service } = request.query as z.infer<typeof agentQuerySchema>;
      const workspace = await findWorkspaceFor(deps.store.db, principalOf(request), owner, name);
      const agent = await reachableAgent(deps.store.db, deps.agents, workspace, service, `. Start it with \`den start ${name} --wait\` and try again.`);
      workspaces.set(request, { agent, access: trackedWorkspace(workspace) });
    },
  }, (socket, request) => {
    const { agent, access } = workspaces.get(request)!;
    const relay = relayExec(socket, deps.agents, agent, request.log);
    // suspension, logout, a revoked token...: the command is abandoned and the client told why
    const untrack = trackLiveAccess(request, access, relay.revoke);
    socket.once('close', untrack);
  });
}

function bearer(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)$/i.exec(header ?? '');
  return match?.[1];
}
