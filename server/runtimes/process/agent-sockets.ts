import { chmodSync, chownSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { AppError } from '../../../protocol/errors.ts';
import type { AcceptAgentSocket } from '../driver.ts';
import type { WorkspacePaths } from './state.ts';

export const AGENT_SOCKET_NAME = 'agent.sock';
/** sun_path holds 108 bytes, the terminating NUL included */
const MAX_SOCKET_PATH_BYTES = 107;

/**
 * The unix sockets den takes its process-runtime agents' connections on: one per workspace, in
 * a directory of the workspace (mounted into its sandbox, so a socket recreated by the next
 * server is seen inside). A connection is handed over with the workspace of the socket it came
 * in on; the server checks that the agent's token is for that workspace.
 */
export interface AgentSockets {
  /** Starts handing connections to `accept`, listening again for `existing` workspaces (a restarted server). */
  serve(
    accept: AcceptAgentSocket,
    existing: { workspaceId: string; paths: WorkspacePaths; uid: number | undefined }[],
    onError: (workspaceId: string, error: Error) => void,
  ): Promise<void>;
  /** Listens for one workspace (idempotent); the socket's path, or undefined while nothing serves. */
  listen(workspaceId: string, paths: WorkspacePaths, uid: number | undefined): Promise<string | undefined>;
  close(workspaceId: string): Promise<void>;
  closeAll(): Promise<void>;
}

export function createAgentSockets(): AgentSockets {
  let accept: AcceptAgentSocket | undefined;
  const servers = new Map<string, Promise<Server>>();

  async function listen(workspaceId: string, paths: WorkspacePaths, uid: number | undefined): Promise<string | undefined> {
    if (!accept) return undefined;
    const path = join(paths.socketDir, AGENT_SOCKET_NAME);
    if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) {
      throw new AppError('RUNTIME_ERROR',
        `The agent socket path ${path} is longer than a unix socket allows (${MAX_SOCKET_PATH_BYTES} bytes). Start den with a shorter --data-dir.`);
    }
    let server = servers.get(workspaceId);
    if (!server) {
      const handler = accept;
      server = open(path, uid, (socket) => handler(socket, workspaceId));
      servers.set(workspaceId, server);
      server.catch(() => servers.delete(workspaceId));
    }
    await server;
    return path;
  }

  return {
    async serve(handler, existing, onError) {
      accept = handler;
      for (const { workspaceId, paths, uid } of existing) {
        await listen(workspaceId, paths, uid).catch((error: Error) => onError(workspaceId, error));
      }
    },
    listen,
    async close(workspaceId) {
      const server = servers.get(workspaceId);
      servers.delete(workspaceId);
      if (server) await closeServer(await server.catch(() => undefined));
    },
    async closeAll() {
      const all = [...servers.values()];
      servers.clear();
      await Promise.all(all.map(async (server) => closeServer(await server.catch(() => undefined))));
    },
  };
}

/** Listens on `path`, replacing a socket a previous server left; only the workspace's uid may connect. */
function open(path: string, uid: number | undefined, onConnection: (socket: Socket) => void): Promise<Server> {
  const dir = join(path, '..');
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  rmSync(path, { force: true });
  return new Promise((resolve, reject) => {
    const server = createServer(onConnection);
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      // a socket's permission is what guards connect(); the token is checked after
      chmodSync(path, 0o600);
      if (uid !== undefined) chownSync(path, uid, uid);
      resolve(server);
    });
  });
}

function closeServer(server: Server | undefined): Promise<void> {
  return new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()));
}
