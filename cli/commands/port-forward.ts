import { createServer, type Server, type Socket } from 'node:net';
import { fetchUsername } from '../../client/exec.ts';
import { runTunnel } from '../../client/tunnel.ts';
import { requireLogin } from '../config.ts';
import { UsageError } from '../errors.ts';
import { note } from '../output.ts';
import { parseWorkspaceRef } from '../refs.ts';

/** One forward: a local port to a port (or unix socket) in the workspace. */
export interface ForwardSpec {
  localPort: number;
  remote: { port: number } | { path: string };
}

/**
 * `den port-forward WS 8080:3000 [9000 ...]`: listens on 127.0.0.1 for each local port; every
 * connection gets its own websocket to the workspace (GET .../port-forward), so a server restart
 * or a dropped connection costs only the connections open at that moment: the next one dials
 * again. Runs until interrupted.
 */
export async function portForward(reference: string, specs: string[]): Promise<void> {
  if (specs.length === 0) throw new UsageError('Give at least one forward, for example `den port-forward demo 8080:3000`.');
  const forwards = specs.map(parseForwardSpec);
  const config = requireLogin();
  const parsed = parseWorkspaceRef(reference);
  const owner = parsed.owner ?? config.username ?? (await fetchUsername(config.url, config.token));
  const label = `${owner}/${parsed.name}`;
  const path = `/api/v1/workspaces/${encodeURIComponent(owner)}/${encodeURIComponent(parsed.name)}/port-forward`;
  const servers: Server[] = [];
  for (const forward of forwards) {
    const query: Record<string, string> = 'path' in forward.remote ? { path: forward.remote.path } : { port: String(forward.remote.port) };
    const server = createServer((socket: Socket) => {
      socket.on('error', () => {});
      // end (not destroy) after a clean close: what the workspace sent last must still reach the local client
      runTunnel({ baseUrl: config.url, token: config.token, path, query, input: socket, output: socket }).then(
        () => socket.end(),
        (error: Error) => {
          note(`${describe(forward)}: ${error.message}`);
          socket.destroy();
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) =>
        reject(error.code === 'EADDRINUSE' ? new UsageError(`Local port ${forward.localPort} is already in use; pick another, for example ${forward.localPort + 1}:${'port' in forward.remote ? forward.remote.port : forward.remote.path}.`, 1) : error));
      server.listen(forward.localPort, '127.0.0.1', resolve);
    });
    servers.push(server);
    note(`Forwarding 127.0.0.1:${forward.localPort} -> ${label} ${'port' in forward.remote ? `port ${forward.remote.port}` : forward.remote.path}`);
  }
  note('Press Ctrl-C to stop.');
  await new Promise<void>((resolve) => {
    const stop = () => {
      for (const server of servers) server.close();
      resolve();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

/** `8080:3000`, `3000` (the same port both sides) or `8080:/run/app.sock` (a unix socket in the workspace). */
export function parseForwardSpec(spec: string): ForwardSpec {
  const [local, ...rest] = spec.split(':');
  const remote = rest.join(':');
  const localPort = portNumber(local, spec);
  if (rest.length === 0) return { localPort, remote: { port: localPort } };
  if (remote.startsWith('/')) return { localPort, remote: { path: remote } };
  return { localPort, remote: { port: portNumber(remote, spec) } };
}

function portNumber(text: string, spec: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port < 1 || port > 65535) {
    throw new UsageError(`'${spec}' is not a forward; write LOCAL:REMOTE (8080:3000), PORT (3000), or LOCAL:/path/to/socket.`);
  }
  return port;
}

function describe(forward: ForwardSpec): string {
  return `127.0.0.1:${forward.localPort}`;
}
