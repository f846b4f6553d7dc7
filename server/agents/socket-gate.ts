import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from '../../protocol/errors.ts';
import type { AcceptAgentSocket } from '../runtimes/driver.ts';

/** The only route served on a runtime's agent socket. */
const AGENT_CONNECT_ROUTE = '/api/v1/agent/connect';

/** connection -> the workspace whose agent socket it came in on */
const workspaceOfConnection = new WeakMap<object, string>();

/**
 * How the server takes a connection from a runtime's agent socket (the process runtime's
 * sandboxes reach den only that way): into the same HTTP server, remembered with its workspace,
 * so the gate below serves it the agent link and nothing else, and only for that workspace.
 */
export function acceptAgentSocket(app: FastifyInstance): AcceptAgentSocket {
  return (socket, workspaceId) => {
    workspaceOfConnection.set(socket, workspaceId);
    app.server.emit('connection', socket);
  };
}

/** The workspace a request's connection is bound to (it came in on that workspace's agent socket), if any. */
export function agentSocketWorkspace(request: FastifyRequest): string | undefined {
  return workspaceOfConnection.get(request.raw.socket);
}

/** onRequest hook: on an agent socket, every route but the agent link is a 404, as if it did not exist. */
export async function agentSocketGate(request: FastifyRequest): Promise<void> {
  if (agentSocketWorkspace(request) === undefined || request.routeOptions.url === AGENT_CONNECT_ROUTE) return;
  throw new AppError('NOT_FOUND', 'Only the agent link (/api/v1/agent/connect) is served on a workspace\'s agent socket. Use den\'s address for everything else.');
}
