import { createServer, connect, type Server, type Socket } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { DockerApi, NetworkInfo } from './docker-api.ts';

/** The name containers use for the den host; Docker maps it to the default bridge's gateway. */
export const HOST_ALIAS = 'host.docker.internal';
export const HOST_ALIAS_ENTRY = `${HOST_ALIAS}:host-gateway`;

/**
 * How workspace agents reach the den server. dockerd runs with --iptables=false, so containers
 * have no route out of their bridge networks, but every bridge gateway is an address of the host
 * itself. When den listens on loopback (the default), this relays <docker0 gateway>:<port> to it;
 * the agent dials http://host.docker.internal:<port> (ExtraHosts host-gateway). Service
 * containers get the alias only when an agent runs beside the service; all can reach the gateway
 * address, where only den's own API answers (token-authenticated). See docs/docker.md.
 */
export interface AgentGateway {
  /** The agent URL as seen from inside a container, starting the relay when needed. */
  agentUrl(serverUrl: string): Promise<string>;
  close(): Promise<void>;
}

export function createAgentGateway(docker: DockerApi, log: { warn(message: string): void }): AgentGateway {
  const relays = new Map<string, Promise<Relay>>();

  return {
    async agentUrl(serverUrl) {
      const url = new URL(serverUrl);
      if (!isLoopback(url.hostname)) return serverUrl; // den listens where containers can reach it
      const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
      const key = `${url.hostname}:${port}`;
      let relay = relays.get(key);
      if (!relay) {
        relay = startRelay(docker, url.hostname.replace(/^\[|\]$/g, ''), port, log);
        relays.set(key, relay);
        relay.catch(() => relays.delete(key));
      }
      await relay;
      url.hostname = HOST_ALIAS;
      return url.toString().replace(/\/$/, '');
    },
    async close() {
      const all = await Promise.allSettled(relays.values());
      relays.clear();
      await Promise.all(all.map((result) => (result.status === 'fulfilled' ? result.value.close() : undefined)));
    },
  };
}

interface Relay {
  close(): Promise<void>;
}

async function startRelay(docker: DockerApi, targetHost: string, port: number, log: { warn(message: string): void }): Promise<Relay> {
  const gateway = defaultBridgeGateway(await docker.getNetwork('bridge').inspect());
  if (!gateway) {
    throw new Error('Docker\'s default bridge network has no IPv4 gateway address, so containers cannot reach den. Start dockerd with its default bridge, or give den an access URL containers can reach.');
  }
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
        log.warn(`${gateway}:${port} is already in use; assuming it reaches the den server.`);
        resolve();
      } else reject(error);
    });
    server.listen(port, gateway, () => {
      // Later errors (EMFILE on accept) must not take the den server down with them.
      server.on('error', (error) => log.warn(`The agent relay on ${gateway}:${port} failed: ${error.message}`));
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

/** The host's address on docker0: what host-gateway resolves to inside containers. */
function defaultBridgeGateway(bridge: NetworkInfo): string | undefined {
  const configured = bridge.IPAM?.Config?.find((config) => config.Gateway && !config.Gateway.includes(':'))?.Gateway;
  if (configured) return configured;
  // dockerd leaves Gateway out for the default bridge; the interface itself has the address.
  // Node lists only interfaces with a carrier, and docker0 has none until a container uses it:
  // fall back to dockerd's own rule, the first address of the subnet.
  const device = bridge.Options?.['com.docker.network.bridge.name'] ?? 'docker0';
  const listed = networkInterfaces()[device]?.find((address) => address.family === 'IPv4')?.address;
  if (listed) return listed;
  const subnet = bridge.IPAM?.Config?.find((config) => config.Subnet && !config.Subnet.includes(':'))?.Subnet;
  const match = subnet?.match(/^(\d+)\.(\d+)\.(\d+)\.(\d+)\/\d+$/);
  if (!match) return undefined;
  const base = match.slice(1).reduce((value, octet) => value * 256 + Number(octet), 0) + 1;
  return [24, 16, 8, 0].map((shift) => Math.floor(base / 2 ** shift) % 256).join('.');
}

function isLoopback(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}
