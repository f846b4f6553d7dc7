import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import ssh2, { type AuthContext, type Connection } from 'ssh2';
import { isAppError, type AppError } from '../../protocol/errors.ts';
import type { SshSessionDto } from '../../protocol/ssh.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import { openTcpStream } from '../agents/tcp-stream.ts';
import type { LiveAccess } from '../auth/live-access.ts';
import type { DenBase } from '../base.ts';
import { findUserBySshFingerprint } from '../users/ssh-keys.ts';
import { sshFingerprint } from '../users/ssh-key-format.ts';
import type { ActivityRecorder } from '../workspaces/activity.ts';
import { trackedWorkspace } from '../workspaces/access.ts';
import { agentForwardingAllowed, forwardAuthAgent } from './agent-forward.ts';
import type { Transport } from './backpressure.ts';
import { loadHostKey, type HostKey } from './host-key.ts';
import { serveRemoteForwards, type RelayDeps } from './remote-forward.ts';
import { serveSessionChannel } from './session-channel.ts';
import { OPEN_FAILURE, refuseChannel } from './ssh2-internals.ts';
import { spliceTcp } from './splice.ts';
import { resolveSshTarget, unavailableReason, type SshTarget, type SshUser } from './target.ts';

export interface SshLimits {
  /** SSH connections one user may hold at once (across workspaces) */
  connectionsPerUser: number;
  /** channels (sessions and forwards) one connection may have open at once */
  channelsPerConnection: number;
  /** how long a connection may take to authenticate before it is dropped (OpenSSH's LoginGraceTime is 120 s) */
  loginGraceMs: number;
}

export const DEFAULT_SSH_LIMITS: SshLimits = { connectionsPerUser: 256, channelsPerConnection: 256, loginGraceMs: 60_000 };

export interface SshGatewayDeps extends Pick<DenBase, 'store' | 'clock' | 'log'> {
  agents: AgentHub;
  liveAccess: LiveAccess;
  activity: ActivityRecorder;
  limits?: Partial<SshLimits>;
}

/** An SSH connection whose user the transport authenticated already (`den ssh --stdio` over the API, with its token). */
export interface Tunnel {
  user: SshUser;
  target: SshTarget;
  remoteAddress: string;
}

export interface SshGateway {
  /** The host key every replica presents (generated on first use). */
  hostKey(): Promise<HostKey>;
  /** The port the gateway listens on; null when it does not. */
  port(): number | null;
  /** Listens for SSH on host:port; resolves with the port (useful with 0). */
  listen(host: string, port: number): Promise<number>;
  /** Serves an SSH connection that arrived another way (a websocket), its user already authenticated. */
  acceptTunnel(stream: Duplex, tunnel: Tunnel): Promise<void>;
  /** The open SSH connections to a workspace on this replica. */
  sessions(workspaceId: string): SshSessionDto[];
  /** Stops listening and ends every SSH connection. */
  close(): Promise<void>;
}

/**
 * The server ends keepalives every KEEPALIVE_MS and drops a client silent for KEEPALIVE_MAX
 * intervals: 4 x 15 s rides out a network stall of a minute (a laptop switching networks), and a
 * dead peer's resources are freed within about a minute.
 */
const KEEPALIVE_MS = 15_000;
const KEEPALIVE_MAX = 4;
/** A connection past the user's limit stays this long, time enough for its session to print why, then ends. */
const OVER_LIMIT_GRACE_MS = 10_000;
/** SSH connections one process serves at once, authenticated or not: a bound on what a flood of connects can hold. */
const MAX_CONNECTIONS = 4096;
/** RSA signatures with SHA-1 (`ssh-rsa`) are refused, as OpenSSH 8.8+ does; rsa-sha2-256/512 are fine. */
const ACCEPTED_KEY_TYPES = new Set(['ssh-ed25519', 'ssh-rsa', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521']);

interface Held {
  id: string;
  user: SshUser;
  workspaceId: string;
  remoteAddress: string;
  via: 'ssh' | 'tunnel';
  since: string;
  channels: number;
}

/**
 * The SSH gateway (ssh2 server): authenticates users by the public keys they registered in den
 * (or by the API token of a tunnel), names the workspace by the SSH user name, and maps session
 * and forwarding channels onto channels of the workspace's agent. Built once by the composition
 * root; the TCP listener and the websocket tunnel route both feed it connections.
 */
export function createSshGateway(deps: SshGatewayDeps): SshGateway {
  const limits = { ...DEFAULT_SSH_LIMITS, ...deps.limits };
  const held = new Map<string, Held>();
  /** every connection, counted against the limits or not, so close() ends them all */
  const connections = new Set<Connection>();
  const tunnels = new WeakMap<Transport, Tunnel>();
  let server: ssh2.Server | undefined;
  let hostKeyPromise: Promise<HostKey> | undefined;
  let listening: number | null = null;

  const hostKey = () => {
    hostKeyPromise ??= loadHostKey(deps.store.db, deps.clock);
    hostKeyPromise.catch(() => (hostKeyPromise = undefined));
    return hostKeyPromise;
  };
  const getServer = async () => {
    if (server) return server;
    const key = await hostKey();
    server ??= new ssh2.Server({ hostKeys: [key.privateKey], ident: 'den', keepaliveInterval: KEEPALIVE_MS, keepaliveCountMax: KEEPALIVE_MAX }, (client, info) => {
      // ssh2 hands us the connection without its transport (the socket, or a tunnel's stream): it is the private `_sock` (ssh2 1.17, pinned)
      const transport = (client as unknown as { _sock: Transport })._sock;
      const tunnel = tunnels.get(transport);
      // keystrokes and their echoes are single small packets: Nagle held each one ~40 ms
      if (!tunnel) (client as unknown as { setNoDelay(on: boolean): void }).setNoDelay(true);
      serveConnection(client, transport, tunnel, tunnel?.remoteAddress ?? info.ip ?? 'unknown');
    });
    server.maxConnections = MAX_CONNECTIONS;
    server.on('error', (error: Error) => deps.log.warn({ err: error }, 'SSH listener error'));
    return server;
  };

  const serveConnection = (client: Connection, transport: Transport, tunnel: Tunnel | undefined, remoteAddress: string) => {
    const log = deps.log.child({ ssh: remoteAddress });
    let user = tunnel?.user;
    let target = tunnel?.target;
    /** the key that authenticated the connection (none for a tunnel): removing it ends the connection */
    let keyId: string | undefined;
    const mark = deps.liveAccess.mark();
    connections.add(client);
    const loginTimer = setTimeout(() => client.end(), limits.loginGraceMs);
    loginTimer.unref();
    client.once('close', () => {
      clearTimeout(loginTimer);
      connections.delete(client);
    });
    client.on('error', (error: Error) => log.debug({ err: error }, 'SSH connection error'));
    client.on('authentication', (ctx) => {
      void authenticate(ctx).catch((error) => {
        log.error({ err: error }, 'SSH authentication failed unexpectedly');
        ctx.reject(['publickey']);
      });
    });
    const authenticate = async (ctx: AuthContext) => {
      if (tunnel) return ctx.accept(); // the websocket authenticated the API token
      if (ctx.method !== 'publickey') return ctx.reject(['publickey']);
      if (!ACCEPTED_KEY_TYPES.has(ctx.key.algo)) return ctx.reject(['publickey']);
      // ssh2 names every RSA request ssh-rsa and sets hashAlgo for rsa-sha2-256/512; none means SHA-1
      if (ctx.key.algo === 'ssh-rsa' && !ctx.hashAlgo) return ctx.reject(['publickey']);
      const found = await findUserBySshFingerprint(deps.store.db, sshFingerprint(ctx.key.data));
      if (!found) return ctx.reject(['publickey']);
      if (!ctx.signature) return ctx.accept(); // "would this key do?": yes, now prove it
      const parsed = ssh2.utils.parseKey(ctx.key.data);
      if (parsed instanceof Error || !parsed.verify(ctx.blob!, ctx.signature, ctx.hashAlgo)) return ctx.reject(['publickey']);
      user = { userId: found.userId, username: found.username, role: found.role as SshUser['role'] };
      keyId = found.keyId;
      target = await resolveSshTarget(deps.store.db, user, ctx.username);
      ctx.accept();
    };

    client.on('ready', () => {
      clearTimeout(loginTimer);
      if (!user || !target) return client.end();
      const connectedUser = user;
      const reached = target;
      const workspaceId = reached.ok ? reached.workspace.id : '';
      const entry: Held = { id: randomUUID(), user: connectedUser, workspaceId, remoteAddress, via: tunnel ? 'tunnel' : 'ssh', since: deps.clock.now().toISOString(), channels: 0 };
      const overLimit = [...held.values()].filter((other) => other.user.userId === connectedUser.userId).length >= limits.connectionsPerUser;
      if (!overLimit) held.set(entry.id, entry);
      else setTimeout(() => client.end(), OVER_LIMIT_GRACE_MS).unref();
      // a tunnel's websocket is tracked by its route (with the API token that opened it)
      const untrack = reached.ok && !tunnel
        ? deps.liveAccess.track({ userId: connectedUser.userId, sshKeyId: keyId, workspace: trackedWorkspace(reached.workspace), since: mark }, (error) => endConnection(error))
        : () => {};
      let gone = false;
      client.once('close', () => {
        gone = true;
        held.delete(entry.id);
        untrack();
      });
      const endConnection = (error: AppError) => {
        log.info({ user: connectedUser.username, code: error.code }, 'SSH connection ended: access revoked');
        client.end();
      };
      const activity = () => {
        if (reached.ok) deps.activity.touch(workspaceId);
      };
      activity();

      /** Why nothing can run here, as the sentence for the user; undefined when it can. */
      const refusal = async (): Promise<string | undefined> => {
        if (!reached.ok) return reached.error.message;
        if (overLimit) return `You have ${limits.connectionsPerUser} SSH connections open, the most den allows; close some and connect again.`;
        const label = `${reached.workspace.owner_name}/${reached.workspace.name}`;
        return (await unavailableReason(deps.store.db, deps.agents, workspaceId, label, reached.workspace.name))?.message;
      };
      /** Counts a channel against the limit; false when the connection has as many as it may. */
      const claimChannel = (channel: { once(event: 'close', listener: () => void): unknown }) => {
        entry.channels++;
        channel.once('close', () => entry.channels--);
      };
      const roomForChannel = () => entry.channels < limits.channelsPerConnection;
      /** Refuses a channel the client opened past the limit, saying so (OpenSSH prints it: "open failed: administratively prohibited: ..."). */
      const refuseOverLimit = (reject: () => void) =>
        refuseChannel(client, reject, OPEN_FAILURE.administrativelyProhibited, `This SSH connection has ${limits.channelsPerConnection} channels open, the most den allows; close some sessions or forwarded connections and try again.`);

      /** how connections accepted in the workspace (-R, a forwarded agent) reach the client */
      const relay: RelayDeps = { transport, claimChannel: () => roomForChannel() && ++entry.channels > 0, releaseChannel: () => entry.channels--, onActivity: activity, log };
      const forwardAgent = async () => {
        try {
          if (!(await agentForwardingAllowed(deps.store.db, workspaceId))) {
            log.debug({ workspaceId }, 'SSH agent forwarding refused: the workspace template does not allow it (workspace.ssh.agentForwarding)');
            return undefined;
          }
          if (await refusal()) return undefined;
          return await forwardAuthAgent(client, { ...relay, db: deps.store.db, agents: deps.agents, workspaceId });
        } catch (error) {
          log.debug({ err: error }, 'SSH agent forwarding failed');
          return undefined;
        }
      };

      client.on('session', (accept, reject) => {
        if (!roomForChannel()) return refuseOverLimit(reject);
        const session = accept();
        claimChannel(session);
        serveSessionChannel(session, { agents: deps.agents, workspaceId, refusal, transport, onActivity: activity, onError: (error) => log.error({ err: error }, 'SSH session failed'), forwardAgent });
      });
      const forward = (accept: () => Duplex, reject: () => void, target: { host: string; port: number } | { path: string }) => {
        if (!roomForChannel()) return refuseOverLimit(reject);
        entry.channels++; // held while the agent connects, so a burst of opens cannot pass the limit
        void (async () => {
          const refused = await refusal();
          if (refused) throw new RefusedForward(refused);
          const tcp = await openTcpStream(deps.agents, workspaceId, target);
          // the client left while the agent connected: nothing to splice the connection to
          if (gone) return void tcp.stdio.destroy();
          const channel = accept();
          channel.once('close', () => entry.channels--);
          spliceTcp(channel, tcp, transport, activity);
        })().catch((error) => {
          entry.channels--;
          log.debug({ err: error }, 'SSH forward refused');
          // a refusal (the workspace stopped) and the agent's sentences ("Nothing listens on ...") are the user's to read
          const why = isAppError(error) || error instanceof RefusedForward ? error.message : 'den could not open the forwarded connection in the workspace; try again.';
          refuseChannel(client, reject, OPEN_FAILURE.connectFailed, why);
        });
      };
      client.on('tcpip', (accept, reject, info) => forward(accept, reject, { host: info.destIP, port: info.destPort }));
      client.on('openssh.streamlocal', (accept, reject, info) => forward(accept, reject, { path: info.socketPath }));
      serveRemoteForwards(client, { ...relay, agents: deps.agents, workspaceId, refusal });
    });
  };

  return {
    hostKey,
    port: () => listening,
    async listen(host, port) {
      const ssh = await getServer();
      await new Promise<void>((resolve, reject) => {
        const onError = (error: Error) => reject(error);
        ssh.once('error', onError);
        ssh.listen(port, host, () => {
          ssh.off('error', onError);
          resolve();
        });
      });
      listening = (ssh.address() as { port: number }).port;
      return listening;
    },
    async acceptTunnel(stream, tunnel) {
      const ssh = await getServer();
      tunnels.set(stream, tunnel);
      ssh.injectSocket(stream as never);
    },
    sessions(workspaceId) {
      return [...held.values()]
        .filter((entry) => entry.workspaceId === workspaceId)
        .map((entry) => ({ id: entry.id, user: entry.user.username, remoteAddress: entry.remoteAddress, via: entry.via, since: entry.since, channels: entry.channels }));
    },
    async close() {
      for (const client of connections) client.end();
      connections.clear();
      held.clear();
      if (server && listening !== null) await new Promise<void>((resolve) => server!.close(() => resolve()));
      listening = null;
    },
  };
}

/** A forward refused for a reason told to the user (the workspace is stopped, deleted...). */
class RefusedForward extends Error {}
