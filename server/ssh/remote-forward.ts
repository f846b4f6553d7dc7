import type { Connection, ServerChannel, SocketBindInfo, TcpipBindInfo } from 'ssh2';
import type { AgentHub, ExecSession } from '../agents/hub-types.ts';
import { listenInWorkspace, type AcceptedConnection, type ListenTarget, type WorkspaceListener } from '../agents/tcp-listen.ts';
import type { Transport } from './backpressure.ts';
import { spliceTcp } from './splice.ts';

/** Remote forwards (-R) one SSH connection may hold at once; the agent bounds its listeners across connections too. */
export const MAX_REMOTE_FORWARDS = 32;

export interface RemoteForwardDeps {
  agents: AgentHub;
  workspaceId: string;
  transport: Transport;
  /** why nothing can run in the workspace now (a sentence), undefined when it can */
  refusal(): Promise<string | undefined>;
  /** counts a channel against the connection's limit; false when it has as many as it may */
  claimChannel(): boolean;
  releaseChannel(): void;
  onActivity(): void;
  log: { debug(object: object, message: string): void };
}

interface Forward {
  listener: WorkspaceListener;
  /** what the client asked for: `addr:port` (the port it asked, and the bound one) or the socket path */
  keys: string[];
}

/**
 * `tcpip-forward` (-R) and `streamlocal-forward@openssh.com` (-R with a unix socket) on one SSH
 * connection: each becomes a listener in the workspace (a `listen` channel of the agent), each
 * connection it accepts a `forwarded-tcpip` / `forwarded-streamlocal@openssh.com` channel to the
 * client spliced to a `tcp` channel. A bind that fails refuses that request only. The listener
 * binds on the workspace's loopback whatever address the client names (OpenSSH's GatewayPorts
 * no). `cancel-*` stops one listener; the connection's end stops them all.
 */
export function serveRemoteForwards(client: Connection, deps: RemoteForwardDeps): void {
  const forwards = new Set<Forward>();
  let gone = false;
  client.once('close', () => {
    gone = true;
    for (const forward of forwards) forward.listener.close();
    forwards.clear();
  });

  const find = (key: string) => [...forwards].find((forward) => forward.keys.includes(key));

  /** `keys`: what a cancel may name (none for port 0 until bound); `boundKey` adds the bound port's */
  const start = async (target: ListenTarget, keys: string[], boundKey: ((port: number) => string) | undefined, open: (accepted: AcceptedConnection, port: number | null) => Promise<ServerChannel>): Promise<number | null> => {
    const refused = await deps.refusal();
    if (refused) throw new Error(refused);
    if (forwards.size >= MAX_REMOTE_FORWARDS) throw new Error(`This connection holds ${MAX_REMOTE_FORWARDS} remote forwards, the most den allows.`);
    if (keys.some((key) => find(key))) throw new Error(`${keys.join()} is forwarded already on this connection.`);
    let boundPort: number | null = null;
    const forward: Forward = { keys, listener: { port: null, close() {} } };
    forward.listener = await listenInWorkspace(
      deps.agents,
      deps.workspaceId,
      target,
      (accepted, claim) => void relayAcceptedConnection(deps, accepted, claim, () => open(accepted, boundPort), () => gone),
      () => forwards.delete(forward),
    );
    boundPort = forward.listener.port;
    if (gone) {
      forward.listener.close();
      throw new Error('The SSH connection ended while the workspace bound the forward.');
    }
    if (boundKey && boundPort !== null) keys.push(boundKey(boundPort));
    forwards.add(forward);
    return boundPort;
  };

  const tcpip = (accept: ((port?: number) => void) | undefined, reject: (() => void) | undefined, info: TcpipBindInfo) => {
    const key = `${info.bindAddr}:${info.bindPort}`;
    start({ host: '127.0.0.1', port: info.bindPort }, info.bindPort === 0 ? [] : [key], (port) => `${info.bindAddr}:${port}`, (accepted, port) => openChannel((done) =>
      client.forwardOut(info.bindAddr, port ?? info.bindPort, accepted.originAddress, accepted.originPort, done)))
      .then((port) => accept?.(info.bindPort === 0 ? port ?? undefined : undefined))
      .catch((error: Error) => {
        deps.log.debug({ err: error, forward: key }, 'SSH remote forward refused');
        reject?.();
      });
  };
  const streamlocal = (accept: (() => void) | undefined, reject: () => void, info: SocketBindInfo) => {
    if (!info.socketPath) return reject();
    start({ path: info.socketPath }, [info.socketPath], undefined, () => openChannel((done) => client.openssh_forwardOutStreamLocal(info.socketPath, done)))
      .then(() => accept?.())
      .catch((error: Error) => {
        deps.log.debug({ err: error, forward: info.socketPath }, 'SSH remote forward refused');
        reject();
      });
  };
  const cancel = (key: string, accept: (() => void) | undefined, reject: (() => void) | undefined) => {
    const forward = find(key);
    if (!forward) return reject?.();
    forwards.delete(forward);
    forward.listener.close();
    accept?.();
  };

  // the typings overload the event per request name; ssh2 emits one event for all of them
  const onRequest = (accept: ((port?: number) => void) | undefined, reject: (() => void) | undefined, name: string, info: Partial<TcpipBindInfo & SocketBindInfo>) => {
    const tcpipInfo = { bindAddr: info.bindAddr ?? '', bindPort: info.bindPort ?? 0 };
    switch (name) {
      case 'tcpip-forward':
        return tcpip(accept, reject, tcpipInfo);
      case 'cancel-tcpip-forward':
        return cancel(`${tcpipInfo.bindAddr}:${tcpipInfo.bindPort}`, accept, reject);
      case 'streamlocal-forward@openssh.com':
        return streamlocal(accept, reject ?? (() => {}), { socketPath: info.socketPath ?? '' });
      case 'cancel-streamlocal-forward@openssh.com':
        return cancel(info.socketPath ?? '', accept, reject);
      default:
        // keepalive@openssh.com and other global requests get ssh2's failure reply, which OpenSSH takes as "alive"
        return reject?.();
    }
  };
  client.on('request', onRequest as never);
}

/** What relaying a connection accepted in the workspace to the SSH client needs. */
export type RelayDeps = Pick<RemoteForwardDeps, 'transport' | 'claimChannel' | 'releaseChannel' | 'onActivity' | 'log'>;

/**
 * Relays one connection a workspace listener accepted to a channel `open` opens to the SSH
 * client: claims it as a `tcp` stream and splices the two, counted against the connection's
 * channel limit. Past the limit (or once `gone`), the workspace's connection is claimed and
 * closed at once rather than left waiting.
 */
export async function relayAcceptedConnection(deps: RelayDeps, accepted: AcceptedConnection, claim: () => Promise<ExecSession>, open: () => Promise<ServerChannel>, gone: () => boolean): Promise<void> {
  const counted = !gone() && deps.claimChannel();
  let released = false;
  const release = () => {
    if (counted && !released) deps.releaseChannel();
    released = true;
  };
  let tcp: ExecSession | undefined;
  try {
    tcp = await claim();
    if (!counted || gone()) throw new Error('no room for the forwarded connection');
    const channel = await open();
    channel.once('close', release);
    spliceTcp(channel, tcp, deps.transport, deps.onActivity);
  } catch (error) {
    release();
    tcp?.stdio.destroy();
    deps.log.debug({ err: error, origin: `${accepted.originAddress}:${accepted.originPort}` }, 'SSH connection from a workspace listener dropped');
  }
}

function openChannel(open: (done: (error: Error | undefined, channel: ServerChannel) => void) => void): Promise<ServerChannel> {
  return new Promise((resolve, reject) => open((error, channel) => (error ? reject(error) : resolve(channel))));
}
