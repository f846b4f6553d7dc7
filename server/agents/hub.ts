import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import {
  AGENT_CLOSE,
  AGENT_PROTOCOL,
  decodeFrame,
  encodeFrame,
  helloVersion,
  isProtocolSupported,
  type AgentFrame,
  type ControlFrameOf,
  type LifecycleState,
} from '../../protocol/agent.ts';
import { AppError } from '../../protocol/errors.ts';
import type { BuildLogSink } from '../builds/log-sink.ts';
import type { Config } from '../config.ts';
import type { Metrics } from '../http/metrics.ts';
import { guardSocket } from '../http/socket-guard.ts';
import type { Store } from '../store/connect.ts';
import { iso, type Clock } from '../store/time.ts';
import { recordWorkspaceEvent, type NewWorkspaceEvent } from '../workspaces/events.ts';
import { AgentConnection } from './connection.ts';
import { openExecSession } from './exec-session.ts';
import type { AgentHub, ExecRequest, ExecSession } from './hub-types.ts';
import type { Replicas } from './replicas.ts';
import type { AgentIdentity } from './tokens.ts';
import { createLogSequences } from './log-sequences.ts';
import { createReadyWaits } from './ready.ts';
import { createLocalEventBus, type EventBus } from '../events/bus.ts';

export interface AgentHubDeps {
  config: Config;
  store: Store;
  clock: Clock;
  log: Logger;
  buildLogs: BuildLogSink;
  /** where agent connections and lifecycle states are announced, and readiness waits listen; one of its own when absent */
  events?: EventBus;
  /**
   * This process as a replica (replicas.ts): told which agents connect here and leave, so other
   * replicas can find them, and telling when one of them connected to another replica since.
   */
  presence?: Pick<Replicas, 'id' | 'holdAgent' | 'releaseAgent' | 'onTakenElsewhere'>;
  metrics: Pick<Metrics, 'agentsConnected'>;
  /** how often the server pings each agent; a connection silent for 3 intervals is dropped */
  heartbeatMs?: number;
}

/** The server side of agent connections in this process. */
export interface LocalAgentHub extends AgentHub {
  /**
   * Takes over an authenticated agent websocket: handshake (hello/welcome), then frames.
   * `remoteAddress` is where it came from, for the owner's events.
   */
  accept(socket: WebSocket, identity: AgentIdentity, remoteAddress?: string): void;
  /** The lifecycle state last reported by the workspace's agent to this process. */
  stateOf(workspaceId: string): { buildId: string; state: LifecycleState; message?: string } | undefined;
  /**
   * Records that the agents `keys`, held by a replica that died, are disconnected since `at`
   * (unless they are connected here already), so the reconciler sees them gone.
   */
  recordLost(keys: string[], at: Date): void;
  /** How many entries the hub holds in its per-agent maps, each of them bounded (the tests check it). */
  sizes(): { connections: number; states: number; logSequences: number; persisting: number };
}

const DEFAULT_HEARTBEAT_MS = 15_000;
/** An agent that connects must say hello within this time. */
const HELLO_TIMEOUT_MS = 10_000;

export function createAgentHub(deps: AgentHubDeps): LocalAgentHub {
  const log = deps.log.child({ module: 'agents' });
  const db = deps.store.db;
  const heartbeatMs = deps.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  const connections = new Map<string, AgentConnection>();
  const states = new Map<string, { buildId: string; state: LifecycleState; message?: string }>();
  /** highest log seq appended per workspace and agent process, so frames resent after a reconnect are not appended twice */
  const logSeqs = createLogSequences();
  const events = deps.events ?? createLocalEventBus((error) => log.error({ err: error }, 'an event subscriber failed'));
  const ready = createReadyWaits(db, events, (workspaceId, buildId) => {
    const known = states.get(workspaceId);
    return known?.buildId === buildId ? known.message : undefined;
  });
  /** the store write of each workspace's lifecycle reports while one runs */
  const persisting = new Map<string, Promise<void>>();
  /** the latest lifecycle report of each workspace not yet written to the store */
  const unwritten = new Map<string, { buildId: string; state: LifecycleState; message?: string }>();
  /** where each connection came from and which agent process it is, for the owner's events */
  const peers = new WeakMap<AgentConnection, { address: string; instance: string }>();
  /** event writes in flight, so close() leaves none behind */
  const recording = new Set<Promise<void>>();
  /** per workspace, the last write of when its agent disconnected (chained, so they land in order) */
  const presence = new Map<string, Promise<void>>();
  let closing = false;

  // One connection per agent across replicas, as within one: the one here goes when the agent
  // connected to another replica (4003, like a replaced connection; its record there stays).
  deps.presence?.onTakenElsewhere((workspaceId) => {
    const connection = connections.get(workspaceId);
    if (!connection?.isOpen) return;
    log.info({ workspaceId }, 'the agent connected to another replica; closing its older connection here');
    connection.close(AGENT_CLOSE.replaced, 'replaced by a connection of the workspace agent to another den replica');
  });

  const heartbeat = setInterval(() => {
    const now = Date.now();
    for (const connection of connections.values()) {
      if (now - connection.lastFrameAt > 3 * heartbeatMs) {
        log.warn({ workspaceId: connection.identity.workspaceId }, 'agent missed three heartbeats; dropping its connection');
        connection.terminate();
      } else {
        connection.send({ type: 'ping', id: now });
      }
    }
  }, heartbeatMs);
  heartbeat.unref();

  const updateGauge = () => deps.metrics.agentsConnected.set(connections.size);

  /**
   * Records a lifecycle report: memory first, then the store, then waiters. One store write runs
   * per workspace at a time and writes the latest report when it starts, so an agent that reports
   * faster than the store writes queues nothing: reports in between are superseded.
   */
  const onLifecycle = (identity: AgentIdentity, state: LifecycleState, message?: string) => {
    const previous = states.get(identity.workspaceId);
    const changed = previous?.buildId !== identity.buildId || previous.state !== state;
    states.set(identity.workspaceId, { buildId: identity.buildId, state, ...(message ? { message } : {}) });
    if (changed) {
      deps.buildLogs.append(identity.buildId, { stream: 'system', step: 'agent', line: `The agent reported ${state}${message ? `: ${message}` : '.'}` });
    }
    unwritten.set(identity.workspaceId, { buildId: identity.buildId, state, message });
    if (!persisting.has(identity.workspaceId)) persistReports(identity.workspaceId);
  };

  const persistReports = (workspaceId: string) => {
    const write = (async () => {
      for (let report = unwritten.get(workspaceId); report; report = unwritten.get(workspaceId)) {
        unwritten.delete(workspaceId);
        try {
          await db.updateTable('workspaces').set({ agent_state: report.state }).where('id', '=', workspaceId).execute();
          announce(workspaceId, report.state, report.message);
        } catch (error) {
          log.error({ err: error, workspaceId }, 'could not record the agent state');
        }
      }
    })().finally(() => {
      persisting.delete(workspaceId);
      if (unwritten.has(workspaceId)) persistReports(workspaceId);
    });
    persisting.set(workspaceId, write);
  };

  /** Tells the client event stream about the agent, once the store has it. */
  const announce = (workspaceId: string, state: LifecycleState | 'connected' | 'disconnected', message?: string) => {
    events.publish({ type: 'agent', workspaceId, at: iso(deps.clock.now()), state, ...(message ? { message } : {}) });
  };

  /**
   * Records in the store whether the workspace's agent is connected (null) or since when it is
   * not, so the reconciler (on any replica) can tell an agent gone for good from a reconnect.
   */
  const recordPresence = (workspaceId: string, disconnectedAt: Date | null) => {
    const replica = deps.presence?.id;
    const write = (presence.get(workspaceId) ?? Promise.resolve())
      .then(() => db.updateTable('workspaces').set({ agent_disconnected_at: disconnectedAt && iso(disconnectedAt) }).where('id', '=', workspaceId)
        // a connection ending here says nothing when the agent is connected to another replica now
        .$if(disconnectedAt !== null && replica !== undefined, (update) => update.where(({ not, exists, selectFrom }) =>
          not(exists(selectFrom('agent_locations').select('agent_key').where('agent_key', '=', workspaceId).where('replica_id', '!=', replica!)))))
        .execute())
      .then(() => announce(workspaceId, disconnectedAt ? 'disconnected' : 'connected'), (error: unknown) => log.error({ err: error, workspaceId }, 'could not record whether the agent is connected'))
      .finally(() => { if (presence.get(workspaceId) === write) presence.delete(workspaceId); });
    presence.set(workspaceId, write);
  };

  /** Records an event the workspace's owner sees in `den events`; a failure is logged, never thrown. */
  const recordEvent = (event: NewWorkspaceEvent) => {
    const write = recordWorkspaceEvent(db, deps.clock.now(), event)
      .catch((error: unknown) => log.error({ err: error, workspaceId: event.workspaceId, kind: event.kind }, 'could not record a workspace event'))
      .finally(() => recording.delete(write));
    recording.add(write);
  };

  const onLog = (connection: AgentConnection, instance: string, frame: ControlFrameOf<'log'>) => {
    if (logSeqs.advance(connection.identity.workspaceId, instance, frame.seq)) {
      for (const line of frame.lines) {
        deps.buildLogs.append(connection.identity.buildId, { stream: frame.stream, step: frame.script, line });
      }
    }
    connection.send({ type: 'log_ack', seq: frame.seq });
  };

  const register = (socket: WebSocket, identity: AgentIdentity, hello: ControlFrameOf<'hello'>, address: string) => {
    let violationRecorded = false;
    const connection = new AgentConnection(socket, identity, {
      onFrame(frame) {
        switch (frame.type) {
          case 'lifecycle':
            connection.state = frame.state;
            connection.stateMessage = frame.message;
            return onLifecycle(identity, frame.state, frame.message);
          case 'log':
            return onLog(connection, hello.instance, frame);
          case 'ping':
            return connection.send({ type: 'pong', id: frame.id });
          case 'pong':
            return;
          default:
            // hello, welcome, open_ok... out of place: counted like a malformed frame
            connection.protocolViolation(`The agent sent a '${frame.type}' frame, which the server does not expect after the handshake.`);
        }
      },
      onClosed(code, reason) {
        if (connections.get(identity.workspaceId) === connection) {
          connections.delete(identity.workspaceId);
          updateGauge();
          deps.presence?.releaseAgent(identity.workspaceId);
          if (!closing) recordPresence(identity.workspaceId, deps.clock.now());
        }
        log.info({ workspaceId: identity.workspaceId, code, reason }, 'agent disconnected');
      },
      onProtocolError(message, count) {
        log.warn({ workspaceId: identity.workspaceId, count }, `agent frame rejected: ${message}`);
        // Once per connection: an agent that sends bad frames in a loop writes one event, not one per frame.
        if (violationRecorded) return;
        violationRecorded = true;
        recordEvent({
          workspaceId: identity.workspaceId,
          kind: 'agent_protocol_violation',
          message: `The workspace agent connected from ${address} sent a frame den could not accept (${message}). ` +
            'If this repeats, restart the workspace; an agent that is not den\'s own may be using its token.',
          detail: { address, instance: hello.instance, agentVersion: hello.agentVersion, reason: message },
        });
      },
      onInternalError(error, channel) {
        log.error({ err: error, workspaceId: identity.workspaceId, channel }, 'a channel of the agent link failed unexpectedly; closed that channel');
      },
    }, log);
    peers.set(connection, { address, instance: hello.instance });
    const older = connections.get(identity.workspaceId);
    connections.set(identity.workspaceId, connection);
    updateGauge();
    recordPresence(identity.workspaceId, null);
    deps.presence?.holdAgent(identity.workspaceId);
    if (older?.isOpen) recordReplaced(identity, older, { address, instance: hello.instance });
    older?.close(AGENT_CLOSE.replaced, 'replaced by a newer connection of the workspace agent');
    connection.send({
      type: 'welcome',
      protocol: AGENT_PROTOCOL,
      workspace: { id: identity.workspaceId, name: identity.workspaceName, ownerName: identity.ownerName },
      buildId: identity.buildId,
      manifest: identity.manifest,
      heartbeatMs,
    });
    log.info(
      { workspaceId: identity.workspaceId, buildId: identity.buildId, agentVersion: hello.agentVersion, protocol: hello.protocol, state: hello.state },
      'agent connected',
    );
  };

  /**
   * The agent token is readable by workspace code, so a second connection with it may be an
   * impostor: the owner is told, with both addresses and agent process ids.
   */
  const recordReplaced = (identity: AgentIdentity, older: AgentConnection, newer: { address: string; instance: string }) => {
    const before = peers.get(older);
    const sameProcess = before?.instance === newer.instance;
    recordEvent({
      workspaceId: identity.workspaceId,
      kind: 'agent_connection_replaced',
      message: `A new connection with this workspace's agent token, from ${newer.address}, replaced the open one from ${before?.address ?? 'an unknown address'}` +
        (sameProcess
          ? ' (it names the same agent process as the open one: most likely a reconnect).'
          : ' (a different agent process). If you did not restart the agent, workspace code may be using its token: restart the workspace to issue a new one.'),
      detail: { olderAddress: before?.address ?? null, newerAddress: newer.address, olderInstance: before?.instance ?? null, newerInstance: newer.instance },
    });
  };

  /** The workspace's agent is gone for good (stopped): the next start is a new agent process and build. */
  const forgetAgent = (workspaceId: string) => {
    logSeqs.forget(workspaceId);
    states.delete(workspaceId);
  };

  const hub: LocalAgentHub = {
    accept(socket, identity, remoteAddress = 'unknown') {
      if (closing) return socket.close(1001, 'server shutting down');
      const refuse = (code: number, errorCode: string, message: string) => {
        if (socket.readyState === socket.OPEN) socket.send(encodeFrame({ type: 'error', code: errorCode, message }));
        socket.close(code, errorCode);
      };
      const timer = setTimeout(() => refuse(AGENT_CLOSE.protocolError, 'AGENT_HELLO_TIMEOUT', 'The agent did not say hello in time.'), HELLO_TIMEOUT_MS);
      socket.once('close', () => clearTimeout(timer));
      socket.once('message', guardSocket(socket, log, 'agent link handshake').wrap((data: Buffer, isBinary: boolean) => {
        clearTimeout(timer);
        const text = isBinary ? undefined : data.toString('utf8');
        const version = text === undefined ? undefined : helloVersion(text);
        if (!version) return refuse(AGENT_CLOSE.protocolError, 'BAD_REQUEST', 'The first frame of the agent link must be hello.');
        if (!isProtocolSupported(version)) {
          log.warn({ workspaceId: identity.workspaceId, version }, 'agent speaks an unsupported protocol major');
          return refuse(
            AGENT_CLOSE.protocolUnsupported,
            'AGENT_PROTOCOL_UNSUPPORTED',
            `This den server speaks agent protocol ${AGENT_PROTOCOL.major}.x, the agent ${version.major}.${version.minor}. Use the agent that ships with this server.`,
          );
        }
        let hello: AgentFrame;
        try {
          hello = decodeFrame(text!);
        } catch (error) {
          return refuse(AGENT_CLOSE.protocolError, 'BAD_REQUEST', (error as Error).message);
        }
        if (hello.type !== 'hello') return refuse(AGENT_CLOSE.protocolError, 'BAD_REQUEST', 'The first frame of the agent link must be hello.');
        register(socket, identity, hello, remoteAddress);
      }));
    },

    recordLost(keys, at) {
      for (const key of keys) if (!connections.get(key)?.isOpen) recordPresence(key, at);
    },

    stateOf(workspaceId) {
      return states.get(workspaceId);
    },

    sizes() {
      return { connections: connections.size, states: states.size, logSequences: logSeqs.size(), persisting: persisting.size };
    },

    async waitForReady(workspaceId, buildId, options) {
      // the store and the bus: the agent may be connected to another replica
      return ready.wait(workspaceId, buildId, options);
    },

    isConnected(workspaceId) {
      return connections.get(workspaceId)?.isOpen ?? false;
    },

    async shutdown(workspaceId, options) {
      const connection = connections.get(workspaceId);
      if (!connection?.isOpen) return forgetAgent(workspaceId);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, options.timeoutMs)));
      connection.send({ type: 'shutdown', graceful: true, reason: 'the workspace is stopping' });
      await Promise.race([connection.whenClosed, timeout]);
      clearTimeout(timer);
      connection.close(AGENT_CLOSE.shutdown, 'workspace stopped');
      // the last states it reported (shutting_down, off) are in the store when we return
      await persisting.get(workspaceId);
      forgetAgent(workspaceId);
    },

    async exec(workspaceId, request: ExecRequest): Promise<ExecSession> {
      const connection = connections.get(workspaceId);
      if (!connection?.isOpen) {
        throw new AppError('AGENT_NOT_CONNECTED', 'The workspace agent is not connected. Wait for the workspace to be running (`den show`) and try again.');
      }
      return openExecSession((spec, window, attach) => connection.openChannel(spec, window, (channel, peerWindow) =>
        attach(channel, peerWindow, { send: (frame) => connection.send(frame), release: () => connection.release(channel) })), request);
    },

    async openChannel(workspaceId, spec, window, attach) {
      const connection = connections.get(workspaceId);
      if (!connection?.isOpen) {
        throw new AppError('AGENT_NOT_CONNECTED', 'The workspace agent is not connected. Wait a few seconds (it reconnects by itself) and try again.');
      }
      return connection.openChannel(spec, window, (channel, peerWindow) =>
        attach(channel, peerWindow, { send: (frame) => connection.send(frame), release: () => connection.release(channel) }),
      );
    },

    async close() {
      closing = true;
      clearInterval(heartbeat);
      ready.cancelAll();
      // 1001 "going away": the agent keeps its state and reconnects to the next server
      for (const connection of connections.values()) connection.close(1001, 'server shutting down');
      connections.clear();
      updateGauge();
      await Promise.all([...persisting.values(), ...recording, ...presence.values()]);
    },
  };
  return hub;
}
