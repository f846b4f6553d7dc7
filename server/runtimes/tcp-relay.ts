import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP relay from an address containers or pods can reach (a bridge gateway, a node address)
 * to den's own listener on loopback. Used by runtimes whose agents cannot reach loopback: only
 * den's API answers there, and it authenticates every agent by its token.
 */
export interface Relay {
  close(): Promise<void>;
}

export async function startRelay(listenHost: string, targetHost: string, port: number, log: { warn(message: string): void }): Promise<Relay> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((inbound) => {
    const outbound = connect({ host: targetHost, port });
    sockets.add(inbound).add(outbound);
    inbound.pipe(outbound).pipe(inbound);
    const done = () => {
      inbound.destroy();
      outbound.destroy();
      sockets.delete(inbound);
      sockets.delete(outbound);
    };
    inbound.once('error', done).once('close', done);
    outbound.once('error', done).once('close', done);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      // Something (den itself on 0.0.0.0, or another den's relay) already answers there.
      if (error.code === 'EADDRINUSE') {
        log.warn(`${listenHost}:${port} is already in use; assuming it reaches the den server.`);
        resolve();
      } else reject(error);
    });
    server.listen(port, listenHost, () => {
      // Later errors (EMFILE on accept) must not take the den server down with them.
      server.on('error', (error) => log.warn(`The agent relay on ${listenHost}:${port} failed: ${error.message}`));
      resolve();
    });
  });
  return {
    close: () => new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      if (!server.listening) return resolve();
      server.close(() => resolve());
    }),
  };
}

export function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
