import { Agent, request as httpRequest, type ClientRequest, type ClientRequestArgs, type RequestOptions } from 'node:http';
import type { Duplex } from 'node:stream';
import type { ExecSession } from '../agents/hub-types.ts';
import { HeadGate } from './body-splice.ts';

/**
 * How long an idle connection to an app is kept for the next request: under the 5 s keep-alive
 * timeout of Node's HTTP server (the most common dev server), so den lets go of a connection
 * before a typical app closes it under a request.
 */
export const IDLE_CONNECTION_MS = 4_000;
/** Idle connections kept per workspace port (each holds a tcp channel, and its app window, open). */
export const MAX_IDLE_CONNECTIONS = 8;

/** Where in (or beside) a workspace an app listens: a port of the workspace, or of a host it reaches (an environment service). */
export interface AppAddress {
  host?: string;
  port: number;
}

/** Opens a new connection (a `tcp` channel) to an app of a workspace; throws AGENT_NOT_CONNECTED, TCP_CONNECT_FAILED. */
export type OpenAppConnection = (workspaceId: string, address: AppAddress) => Promise<ExecSession>;

/**
 * Where one request goes: `request` creates the HTTP client request over a connection to the app,
 * `fresh` over a connection opened for it alone (the retry of a request whose reused
 * connection the app had just closed).
 */
export interface AppUpstream {
  request(options: RequestOptions): ClientRequest;
  fresh(options: RequestOptions): Promise<ClientRequest>;
}

/**
 * Upstream keep-alive connections to the apps of workspaces: a request reuses an idle `tcp`
 * channel to the same workspace port when there is one, instead of opening a channel (a round
 * trip to the agent and a TCP connect in the workspace) per request. Node's HTTP Agent does the
 * pooling (its documented subclass hooks); a connection is a channel's stream, kept idle at most
 * IDLE_CONNECTION_MS and dropped as soon as its channel closes.
 */
export class AppConnections {
  private readonly agent = new ChannelAgent();
  private readonly open: OpenAppConnection;

  constructor(open: OpenAppConnection) {
    this.open = open;
  }

  /**
   * The upstream of one request to `port` of the workspace. When no idle connection is there
   * (and always when `pooled` is false: a websocket upgrade takes its connection for itself), a
   * new channel is opened before this returns, so AGENT_NOT_CONNECTED and TCP_CONNECT_FAILED
   * reach the caller before it answered anything.
   */
  async upstream(workspaceId: string, address: AppAddress, pooled: boolean): Promise<AppUpstream> {
    const key: PoolKey = { denWorkspace: workspaceId, denHost: address.host ?? '', denPort: address.port };
    const opened = pooled && this.agent.hasIdle(key) ? undefined : await this.open(workspaceId, address);
    const fresh = async (options: RequestOptions) => {
      const connection = await this.open(workspaceId, address);
      return httpRequest({ ...options, createConnection: () => socketLike(connection) as never });
    };
    if (!pooled) return { request: (options) => httpRequest({ ...options, createConnection: () => socketLike(opened!) as never }), fresh };
    const open = () => this.open(workspaceId, address);
    return {
      request: (options) => {
        const request = httpRequest({ ...options, agent: this.agent, ...key, denOpened: opened, denOpen: open } as RequestOptions);
        // an idle connection came free while this one was opening: the request took that, this one is not needed
        if (opened) request.once('socket', (socket) => socket !== opened.stdio && opened.stdio.destroy());
        return request;
      },
      fresh,
    };
  }
}

interface PoolKey {
  denWorkspace: string;
  /** '' for the workspace's own ports */
  denHost: string;
  denPort: number;
}

type PoolOptions = ClientRequestArgs & PoolKey & { denOpened?: ExecSession; denOpen: () => Promise<ExecSession> };

/** Node's HTTP Agent over `tcp` channels, keyed by workspace, host and port. */
class ChannelAgent extends Agent {
  private readonly idleTimers = new WeakMap<Duplex, NodeJS.Timeout>();
  private readonly closedChannels = new WeakSet<Duplex>();

  constructor() {
    super({ keepAlive: true, maxFreeSockets: MAX_IDLE_CONNECTIONS, scheduling: 'lifo' });
  }

  override getName(options?: ClientRequestArgs): string {
    const key = options as Partial<PoolKey> | undefined;
    return `${key?.denWorkspace}:${key?.denHost}:${key?.denPort}`;
  }

  /** an idle connection the next request to `key` will take (Agent.addRequest skips destroyed ones the same way) */
  hasIdle(key: PoolKey): boolean {
    return (this.freeSockets[this.getName(key as ClientRequestArgs)] ?? []).some((socket) => !socket.destroyed);
  }

  override createConnection(options: ClientRequestArgs, callback?: (error: Error | null, stream: Duplex) => void): Duplex | undefined {
    const pool = options as PoolOptions;
    if (pool.denOpened) return this.adopt(pool.denOpened);
    // the idle connection the caller counted on was gone after all: a new one, asynchronously
    pool.denOpen().then((connection) => callback!(null, this.adopt(connection)), (error: Error) => callback!(error, undefined as never));
    return undefined;
  }

  /** Idle: dropped after IDLE_CONNECTION_MS, or at once when its channel has closed (the app closed it). */
  override keepSocketAlive(socket: Duplex): boolean {
    if (this.closedChannels.has(socket)) return false;
    this.idleTimers.set(socket, setTimeout(() => socket.destroy(), IDLE_CONNECTION_MS).unref());
    return true;
  }

  override reuseSocket(socket: Duplex, request: ClientRequest): void {
    clearTimeout(this.idleTimers.get(socket));
    this.idleTimers.delete(socket);
    super.reuseSocket(socket, request);
  }

  private adopt(connection: ExecSession): Duplex {
    const socket = socketLike(connection);
    if (connection.divertOutput) GATES.set(socket, new HeadGate((take) => connection.divertOutput!(take)));
    const closed = () => {
      this.closedChannels.add(socket);
      // an idle connection the app closed is useless; one in use ends through its response (the client reads the eof)
      if (this.idleTimers.has(socket)) socket.destroy();
    };
    connection.exit.then(closed, closed);
    return socket;
  }
}

/** The head gate of a pooled connection (server/apps/body-splice.ts), by the socket Node's HTTP client was given. */
export function headGateOf(socket: unknown): HeadGate | undefined {
  return typeof socket === 'object' && socket !== null ? GATES.get(socket as Duplex) : undefined;
}

const GATES = new WeakMap<Duplex, HeadGate>();

/** A channel's stream with the socket methods Node's HTTP client and Agent call (no-ops: there is no TCP socket here to tune). */
function socketLike(connection: ExecSession): Duplex {
  const stream = connection.stdio as Duplex & Record<string, unknown>;
  for (const method of ['setKeepAlive', 'setNoDelay', 'setTimeout', 'ref', 'unref']) stream[method] ??= () => stream;
  return stream;
}
