import { WebSocket } from 'ws';
import { MAX_CONTROL_FRAME_BYTES } from '../../protocol/agent.ts';
import { AppError, isAppError } from '../../protocol/errors.ts';
import { RELAY_PROTOCOL, RELAY_PROTOCOL_HEADER, RELAY_REPLICA_HEADER } from '../../protocol/relay.ts';
import { AgentConnection } from './connection.ts';
import { openExecSession } from './exec-session.ts';
import type { LocalAgentHub } from './hub.ts';
import { agentKey, parseAgentKey } from './hub-types.ts';
import type { PeerReplica, Replicas } from './replicas.ts';

export interface RoutedHubDeps {
  /** the agents connected to this process */
  local: LocalAgentHub;
  replicas: Pick<Replicas, 'id' | 'secret' | 'locate' | 'heldElsewhere'>;
  log: { error(details: object, message: string): void; warn(details: object, message: string): void; info(details: object, message: string): void };
  /** how often an idle relay socket is pinged; one silent for three intervals is dropped */
  heartbeatMs?: number;
}

/** A relay socket must open within this time, or the agent counts as not connected. */
const DIAL_TIMEOUT_MS = 5_000;
const DEFAULT_HEARTBEAT_MS = 15_000;
/** Relay sockets kept open at once; past it the least recently used goes (each is cheap, but peers' agents are unbounded). */
const MAX_RELAY_SOCKETS = 1_000;

/**
 * The agent hub the rest of the server uses: the agent's own connection when it is connected to
 * this process, and otherwise a relay socket (protocol/relay.ts) to the replica that holds it,
 * found through the store (replicas.ts). Exec, terminal and admin channels take either path the
 * same way; the relay socket is an agent link as far as this side can tell, so channel framing,
 * open timeouts and credit are the agent link's own (connection.ts, agent-flow.ts). One relay
 * socket per (replica, agent), opened on first use and kept while it is used.
 */
export function createRoutedAgentHub(deps: RoutedHubDeps): LocalAgentHub {
  const { local, replicas, log } = deps;
  const heartbeatMs = deps.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  /** `replica id \n agent key` -> its relay socket (being opened or open), least recently used first */
  const links = new Map<string, Promise<AgentConnection>>();

  const heartbeat = setInterval(() => {
    const now = Date.now();
    for (const link of links.values()) {
      void link.then((connection) => {
        if (now - connection.lastFrameAt > 3 * heartbeatMs) connection.terminate();
        else connection.send({ type: 'ping', id: now });
      }, () => undefined);
    }
  }, heartbeatMs);
  heartbeat.unref();

  /** The relay socket to the replica holding `agentKey`; undefined when no live replica holds it. */
  async function relayTo(agentKey: string, fresh = false): Promise<AgentConnection | undefined> {
    const peer = await replicas.locate(agentKey, { fresh });
    if (!peer) return undefined;
    const id = `${peer.id}\n${agentKey}`;
    let link = links.get(id);
    if (link) {
      links.delete(id);
      links.set(id, link);
    } else {
      link = dial(peer, agentKey, () => { if (links.get(id) === link) links.delete(id); });
      links.set(id, link);
      link.catch(() => { if (links.get(id) === link) links.delete(id); });
      if (links.size > MAX_RELAY_SOCKETS) {
        const [oldest] = links.values();
        links.delete(links.keys().next().value!);
        void oldest.then((connection) => connection.close(1000, 'relay socket not used lately'), () => undefined);
      }
    }
    return link;
  }

  function dial(peer: PeerReplica, agentKey: string, forget: () => void): Promise<AgentConnection> {
    const url = `${peer.url.replace(/^http/, 'ws')}/api/v1/replicas/relay?agent=${encodeURIComponent(agentKey)}`;
    const socket = new WebSocket(url, {
      headers: {
        authorization: `Bearer ${replicas.secret}`,
        [RELAY_REPLICA_HEADER]: replicas.id,
        [RELAY_PROTOCOL_HEADER]: `${RELAY_PROTOCOL.major}.${RELAY_PROTOCOL.minor}`,
      },
      perMessageDeflate: false,
      maxPayload: MAX_CONTROL_FRAME_BYTES,
      handshakeTimeout: DIAL_TIMEOUT_MS,
    });
    return new Promise<AgentConnection>((resolve, reject) => {
      socket.once('unexpected-response', (_request, response) => {
        socket.terminate();
        reject(new AppError('AGENT_NOT_CONNECTED', `The replica that holds the workspace agent refused the relay (HTTP ${response.statusCode}). Try again; if it keeps happening, check that the replicas share one database and reach each other at their replica URLs.`));
      });
      socket.once('error', (error) => {
        reject(new AppError('AGENT_NOT_CONNECTED', `The replica that holds the workspace agent (${peer.url}) cannot be reached. Try again in a few seconds: if that replica is gone, the agent reconnects to another one.`, { cause: error }));
      });
      socket.once('open', () => {
        // an error after the open ends in 'close', which the connection handles; unheard, it would stop the process
        socket.on('error', () => undefined);
        // the agent's identity is the replica's business; this side knows the agent by its key
        const identity = { workspaceId: parseAgentKey(agentKey).workspaceId, agentName: parseAgentKey(agentKey).agent, workspaceName: agentKey, ownerName: '', buildId: '', manifest: { env: {}, startupScripts: [], apps: [] } };
        const connection = new AgentConnection(socket, identity, {
          onFrame(frame) {
            if (frame.type !== 'pong') connection.protocolViolation(`The replica sent a '${frame.type}' frame, which does not cross a relay towards it.`);
          },
          onClosed: forget,
          onProtocolError(message) {
            log.warn({ replica: peer.id, agentKey }, `a replica relay frame was refused: ${message}`);
          },
          onInternalError(error, channel) {
            log.error({ err: error, replica: peer.id, channel }, 'a relayed channel failed unexpectedly; closed that channel');
          },
        }, log);
        resolve(connection);
      });
    });
  }

  /** Opens through the relay; once more after a fresh lookup when the agent had left that replica. */
  async function openRemote<T>(agentKey: string, open: (connection: AgentConnection) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const connection = await relayTo(agentKey, attempt > 0);
      if (!connection) throw notConnected();
      try {
        return await open(connection);
      } catch (error) {
        if (attempt > 0 || !isAppError(error) || error.code !== 'AGENT_NOT_CONNECTED') throw error;
        connection.close(1000, 'the agent is not on that replica any more');
      }
    }
  }

  const hub: LocalAgentHub = {
    accept: (socket, identity, remoteAddress) => local.accept(socket, identity, remoteAddress),
    stateOf: (target) => local.stateOf(target),
    sizes: () => local.sizes(),
    recordLost: (keys, at) => local.recordLost(keys, at),
    waitForReady: (target, buildId, options) => local.waitForReady(target, buildId, options),

    isConnected(target) {
      return local.isConnected(target) || replicas.heldElsewhere(agentKey(target));
    },

    async shutdown(target, options) {
      if (!local.isConnected(target)) {
        const connection = await relayTo(agentKey(target)).catch(() => undefined);
        if (connection?.isOpen) {
          // the replica that holds the agent shuts it down and then closes the relay socket
          let timer: NodeJS.Timeout | undefined;
          connection.send({ type: 'shutdown', graceful: true, reason: 'the workspace is stopping' });
          await Promise.race([connection.whenClosed, new Promise<void>((resolve) => (timer = setTimeout(resolve, options.timeoutMs)))]);
          clearTimeout(timer);
          connection.close(1000, 'agent shut down');
        }
      }
      // here: the agent's own shutdown; elsewhere: forgets what this process knew of it
      await local.shutdown(target, options);
    },

    exec(target, request) {
      if (local.isConnected(target)) return local.exec(target, request);
      return openRemote(agentKey(target), (connection) => openExecSession((spec, window, attach) => connection.openChannel(spec, window, (channel, peerWindow) =>
        attach(channel, peerWindow, { send: (frame) => connection.send(frame), release: () => connection.release(channel) })), request));
    },

    openChannel(target, spec, window, attach) {
      if (local.isConnected(target)) return local.openChannel(target, spec, window, attach);
      return openRemote(agentKey(target), (connection) => connection.openChannel(spec, window, (channel, peerWindow) =>
        attach(channel, peerWindow, { send: (frame) => connection.send(frame), release: () => connection.release(channel) })));
    },

    async close() {
      clearInterval(heartbeat);
      const open = [...links.values()];
      links.clear();
      for (const link of open) void link.then((connection) => connection.close(1001, 'server shutting down'), () => undefined);
      await local.close();
    },
  };
  return hub;
}

function notConnected(): AppError {
  return new AppError('AGENT_NOT_CONNECTED', 'The workspace agent is not connected to any den replica. Wait a few seconds (it reconnects by itself) and try again.');
}
