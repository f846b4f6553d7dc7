import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { createWebSocketStream, type WebSocket } from 'ws';
import { z } from 'zod';
import { AppError, errorEnvelopeSchema, isAppError } from '../../protocol/errors.ts';
import { portForwardQuerySchema, SSH_SOCKET_CLOSE, sshInfoSchema, sshSessionListSchema } from '../../protocol/ssh.ts';
import { workspaceParamsSchema } from '../../protocol/workspaces.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import { openTcpStream } from '../agents/tcp-stream.ts';
import { trackLiveAccess } from '../auth/plugin.ts';
import type { DenBase } from '../base.ts';
import { principalOf } from '../http/auth-types.ts';
import { findWorkspaceFor, trackedWorkspace, type WorkspaceRow } from '../workspaces/access.ts';
import type { ActivityRecorder } from '../workspaces/activity.ts';
import type { SshGateway } from './gateway.ts';
import { spliceTcp } from './splice.ts';
import { unavailableReason } from './target.ts';

export interface SshRoutesOptions extends Pick<DenBase, 'store'> {
  agents: AgentHub;
  ssh: SshGateway;
  activity: ActivityRecorder;
}

const errors = { 401: errorEnvelopeSchema, 403: errorEnvelopeSchema, 404: errorEnvelopeSchema };
type Found = WorkspaceRow & { owner_name: string };

/**
 * The SSH gateway's HTTP side (docs/editors.md):
 *  - GET /ssh                                        the host key and the SSH port
 *  - GET /workspaces/:owner/:name/ssh-sessions       the open SSH connections to a workspace
 *  - GET /workspaces/:owner/:name/ssh                websocket: an SSH connection tunnelled through
 *                                                    the HTTP(S) port (`den ssh --stdio`), its user
 *                                                    the API token's
 *  - GET /workspaces/:owner/:name/port-forward?port= websocket: one TCP connection to a port or
 *                                                    unix socket in the workspace (`den port-forward`)
 * Who may reach the workspace is findWorkspaceFor's, checked before the upgrade.
 */
export async function sshRoutes(fastify: FastifyInstance, deps: SshRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const found = new WeakMap<FastifyRequest, Found>();
  const queries = new WeakMap<FastifyRequest, z.infer<typeof portForwardQuerySchema>>();
  const findBeforeUpgrade = async (request: FastifyRequest) => {
    const { owner, name } = request.params as z.infer<typeof workspaceParamsSchema>;
    found.set(request, await findWorkspaceFor(deps.store.db, principalOf(request), owner, name));
  };

  app.get('/ssh', {
    config: { auth: 'user' },
    schema: { summary: 'The SSH gateway\'s host key and port', tags: ['ssh'], response: { 200: sshInfoSchema, 401: errorEnvelopeSchema } },
  }, async () => {
    const key = await deps.ssh.hostKey();
    return { port: deps.ssh.port(), hostKey: { publicKey: key.publicKey, fingerprint: key.fingerprint } };
  });

  app.get('/workspaces/:owner/:name/ssh-sessions', {
    config: { auth: 'user' },
    schema: { summary: 'The open SSH connections to a workspace (on this replica)', tags: ['ssh'], params: workspaceParamsSchema, response: { 200: sshSessionListSchema, ...errors } },
  }, async (request) => {
    const workspace = await findWorkspaceFor(deps.store.db, principalOf(request), request.params.owner, request.params.name);
    return { sessions: deps.ssh.sessions(workspace.id) };
  });

  app.get('/workspaces/:owner/:name/ssh', {
    websocket: true,
    config: { auth: 'user' },
    schema: { params: workspaceParamsSchema },
    preHandler: findBeforeUpgrade,
  }, (socket, request) => {
    const workspace = found.get(request)!;
    const principal = principalOf(request);
    const stream = createWebSocketStream(socket);
    stream.on('error', () => {});
    const untrack = trackLiveAccess(request, trackedWorkspace(workspace), (error) => closeWith(socket, error));
    socket.once('close', () => {
      untrack();
      // ws's stream only ends its readable side on close; ssh2 frees the connection on the stream's 'close'
      stream.destroy();
    });
    void deps.ssh.acceptTunnel(stream, {
      user: { userId: principal.userId, username: principal.username, role: principal.role },
      target: { ok: true, workspace },
      remoteAddress: request.ip,
    }).catch((error) => {
      request.log.error({ err: error }, 'the SSH tunnel could not start');
      closeWith(socket, new AppError('INTERNAL', 'The SSH gateway could not start; the server log has the details.'));
    });
  });

  app.get('/workspaces/:owner/:name/port-forward', {
    websocket: true,
    config: { auth: 'user' },
    schema: { params: workspaceParamsSchema },
    // the query is read after the workspace is found, so a caller who may not see it learns nothing from a validation error
    preHandler: async (request) => {
      await findBeforeUpgrade(request);
      const query = portForwardQuerySchema.safeParse(request.query);
      if (!query.success) throw new AppError('VALIDATION_FAILED', 'Say where to connect in the workspace: ?port=3000 (and optionally &host=...), or ?path=/path/to/socket.');
      queries.set(request, query.data);
    },
  }, (socket, request) => {
    const workspace = found.get(request)!;
    const query = queries.get(request)!;
    const untrack = trackLiveAccess(request, trackedWorkspace(workspace), (error) => closeWith(socket, error));
    // messages that arrive while the agent connects wait in the stream (bounded by ws's backpressure once it is piped)
    const stream = createWebSocketStream(socket);
    stream.on('error', () => {});
    socket.once('close', () => {
      untrack();
      stream.destroy();
    });
    void (async () => {
      const label = `${workspace.owner_name}/${workspace.name}`;
      const down = await unavailableReason(deps.store.db, deps.agents, workspace.id, label, workspace.name);
      if (down) throw down;
      const target = query.path !== undefined ? { path: query.path } : { host: query.host, port: query.port! };
      const tcp = await openTcpStream(deps.agents, workspace.id, target);
      spliceTcp(stream, tcp, stream, () => deps.activity.touch(workspace.id));
    })().catch((error) => {
      if (!isAppError(error)) request.log.error({ err: error }, 'a port forward failed');
      closeWith(socket, isAppError(error) ? error : new AppError('INTERNAL', 'The port forward failed; the server log has the details.'));
    });
  });
}

/** Tells the client why in one text message (the error envelope), then closes: close reasons are too short for den's sentences. */
function closeWith(socket: WebSocket, error: AppError): void {
  if (socket.readyState !== socket.OPEN) return;
  socket.send(JSON.stringify({ error: { code: error.code, message: error.message } }));
  socket.close(SSH_SOCKET_CLOSE.error, error.code);
}
