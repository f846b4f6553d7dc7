import { networkInterfaces } from 'node:os';
import type { DockerApi, NetworkInfo } from './docker-api.ts';
import { isLoopback, startRelay, type Relay } from '../tcp-relay.ts';

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
        relay = startBridgeRelay(docker, url.hostname.replace(/^\[|\]$/g, ''), port, log);
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

async function startBridgeRelay(docker: DockerApi, targetHost: string, port: number, log: { warn(message: string): void }): Promise<Relay> {
  const gateway = defaultBridgeGateway(await docker.getNetwork('bridge').inspect());
  if (!gateway) {
    throw new Error('Docker\'s default bridge network has no IPv4 gateway address, so containers cannot reach den. Start dockerd with its default bridge, or give den an access URL containers can reach.');
  }
  return startRelay(gateway, targetHost, port, log);
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
