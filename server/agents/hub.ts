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
  MAIN_AGENT,
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
import { agentKey, agentRef, parseAgentKey, type AgentHub, type AgentRef, type AgentTarget, type ExecRequest, type ExecSession } from './hub-types.ts';
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
   * This process as a replica (replicas.ts): told which agents connect here and leave (by
   * agentKey), so other replicas can find them, and telling when one of them connected to
   * another replica since.
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
  /** The lifecycle state last reported by the agent to this process. */
  stateOf(agent: AgentTarget): { buildId: string; state: LifecycleState; message?: string } | undefined;
  /**
   * Records that the agents `keys` (agentKey), held by a replica that died, are disconnected
   * since `at` (unless they are connected here already), so the reconciler sees them gone.
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
  // Every per-agent map is keyed by agentKey(): one workspace may run several agents.
  const connections = new Map<string, AgentConnection>();
  const states = new Map<string, { buildId: string; state: LifecycleState; message?: string }>();
  /** highest log seq appended per agent and agent process, so frames resent after a reconnect are not appended twice */
  const logSeqs = createLogSequences();
  const events = deps.events ?? createLocalEventBus((error) => log.error({ err: error }, 'an event subscriber failed'));
  const ready = createReadyWaits(db, events, (ref, buildId) => {
    const known = states.get(agentKey(ref));
    return known?.buildId === buildId ? known.message : undefined;
  });
  /** the store write of each agent's lifecycle reports while one runs */
  const persisting = new Map<string, Promise<void>>();
  /** the latest lifecycle report of each agent not yet written to the store */
  const unwritten = new Map<string, { buildId: string; state: LifecycleState; message?: string }>();
  /** where each connection came from and which agent process it is, for the owner's events */
  const peers = new WeakMap<AgentConnection, { address: string; instance: string }>();
  /** event writes in flight, so close() leaves none behind */
  const recording = new Set<Promise<void>>();
  /** per agent, the last write of when it connected or disconnected (chained, so they land in order) */
  const presence = new Map<string, Promise<void>>();
  let closing = false;

  // One connection per agent across replicas, as within one: the one here goes when the agent
  // connected to another replica (4003, like a replaced connection; its record there stays).
  deps.presence?.onTakenElsewhere((key) => {
    const connection = connections.get(key);
    if (!connection?.isOpen) return;
    log.info({ agent: key }, 'the agent connected to another replica; closing its older connection here');
    connection.close(AGENT_CLOSE.replaced, 'replaced by a connection of the same agent to another den replica');
  });

  const heartbeat = setInterval(() => {
    const now = Date.now();
    for (const connection of connections.values()) {
      if (now - connection.lastFrameAt > 3 * heartbeatMs) {
        log.warn({ workspaceId: connection.identity.workspaceId, agent: connection.identity.agentName }, 'agent missed three heartbeats; dropping its connection');
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
    const key = agentKey(refOf(identity));
    const previous = states.get(key);
    const changed = previous?.buildId !== identity.buildId || previous.state !== state;
    states.set(key, { buildId: identity.buildId, state, ...(message ? { message } : {}) });
    if (changed) {
      const who = identity.agentName === MAIN_AGENT ? 'The agent' : `The agent of service ${identity.agentName}`;
      deps.buildLogs.append(identity.buildId, { stream: 'system', step: 'agent', line: `${who} reported ${state}${message ? `: ${message}` : '.'}` });
    }
    unwritten.set(key, { buildId: identity.buildId, state, message });
    if (!persisting.has(key)) persistReports(refOf(identity));
  };

  const persistReports = (ref: AgentRef) => {
    const key = agentKey(ref);
    const write = (async () => {
      for (let report = unwritten.get(key); report; report = unwritten.get(key)) {
        unwritten.delete(key);
        try {
          await upsertAgent(ref, { state: report.state });
          announce(ref, report.state, report.message);
        } catch (error) {
          log.error({ err: error, ...ref }, 'could not record the agent state');
        }
      }
    })().finally(() => {
      persisting.delete(key);
      if (unwritten.has(key)) persistReports(ref);
    });
    persisting.set(key, write);
  };

  /** Writes some columns of the agent's row, creating it when the agent has none yet. */
  const upsertAgent = (ref: AgentRef, values: { state?: string; connected_at?: string; disconnected_at?: string | null }) =>
    db.insertInto('agents')
      .values({ workspace_id: ref.workspaceId, name: ref.agent, state: null, revision: null, connected_at: null, disconnected_at: null, ...values })
      .onConflict((c) => c.columns(['workspace_id', 'name']).doUpdateSet(values))
      .execute();

  /** Tells the client event stream about the agent, once the store has it. */
  const announce = (ref: AgentRef, state: LifecycleState | 'connected' | 'disconnected', message?: string) => {
    events.publish({
      type: 'agent', workspaceId: ref.workspaceId, ...(ref.agent !== MAIN_AGENT ? { agent: ref.agent } : {}),
      at: iso(deps.clock.now()), state, ...(message ? { message } : {}),
    });
  };

  /**
   * Records in the store whether the agent is connected (disconnected_at null) or since when it
   * is not, so the reconciler (on any replica) can tell an agent gone for good from a reconnect.
   */
  const recordPresence = (ref: AgentRef, disconnectedAt: Date | null) => {
    const key = agentKey(ref);
    const at = iso(disconnectedAt ?? deps.clock.now());
    const replica = deps.presence?.id;
    // The row exists once the agent connected: a disconnection only updates it, and says nothing
    // when the agent is connected to another replica by now.
    const markDisconnected = () => db.updateTable('agents').set({ disconnected_at: at })
      .where('workspace_id', '=', ref.workspaceId).where('name', '=', ref.agent)
      .$if(replica !== undefined, (update) => update.where(({ not, exists, selectFrom }) =>
        not(exists(selectFrom('agent_locations').select('agent_key').where('agent_key', '=', key).where('replica_id', '!=', replica!)))))
      .execute();
    const write = (presence.get(key) ?? Promise.resolve())
      .then(async () => { await (disconnectedAt ? markDisconnected() : upsertAgent(ref, { connected_at: at, disconnected_at: null })); })
      .then(() => announce(ref, disconnectedAt ? 'disconnected' : 'connected'), (error: unknown) => log.error({ err: error, ...ref }, 'could not record whether the agent is connected'))
      .finally(() => { if (presence.get(key) === write) presence.delete(key); });
    presence.set(key, write);
  };

  /** Records an event the workspace's owner sees in `den events`; a failure is logged, never thrown. */
  const recordEvent = (event: NewWorkspaceEvent) => {
    const write = recordWorkspaceEvent(db, deps.clock.now(), event)
      .catch((error: unknown) => log.error({ err: error, workspaceId: event.workspaceId, kind: event.kind }, 'could not record a workspace event'))
      .finally(() => recording.delete(write));
    recording.add(write);
  };

  const onLog = (connection: AgentConnection, instance: string, frame: ControlFrameOf<'log'>) => {
    if (logSeqs.advance(agentKey(refOf(connection.identity)), instance, frame.seq)) {
      for (const line of frame.lines) {
        deps.buildLogs.append(connection.identity.buildId, { stream: frame.stream, step: frame.script, line });
      }
    }
    connection.send({ type: 'log_ack', seq: frame.seq });
  };

  const register = (socket: WebSocket, identity: AgentIdentity, hello: ControlFrameOf<'hello'>, address: string) => {
    const ref = refOf(identity);
    const key = agentKey(ref);
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
        if (connections.get(key) === connection) {
          connections.delete(key);
          updateGauge();
          deps.presence?.releaseAgent(key);
          if (!closing) {
            recordPresence(ref, deps.clock.now());
            if (ref.agent !== MAIN_AGENT && code !== AGENT_CLOSE.shutdown) recordServiceAgentLost(ref, code, reason);
          }
        }
        log.info({ ...ref, code, reason }, 'agent disconnected');
      },
      onProtocolError(message, count) {
        log.warn({ ...ref, count }, `agent frame rejected: ${message}`);
        // Once per connection: an agent that sends bad frames in a loop writes one event, not one per frame.
        if (violationRecorded) return;
        violationRecorded = true;
        recordEvent({
          workspaceId: identity.workspaceId,
          kind: 'agent_protocol_violation',
          message: `The ${agentPhrase(ref)} connected from ${address} sent a frame den could not accept (${message}). ` +
            'If this repeats, restart the workspace; an agent that is not den\'s own may be using its token.',
          detail: { agent: ref.agent, address, instance: hello.instance, agentVersion: hello.agentVersion, reason: message },
        });
      },
      onInternalError(error, channel) {
        log.error({ err: error, ...ref, channel }, 'a channel of the agent link failed unexpectedly; closed that channel');
      },
    }, log);
    peers.set(connection, { address, instance: hello.instance });
    const older = connections.get(key);
    connections.set(key, connection);
    updateGauge();
    recordPresence(ref, null);
    deps.presence?.holdAgent(key);
    if (older?.isOpen) recordReplaced(identity, older, { address, instance: hello.instance });
    older?.close(AGENT_CLOSE.replaced, 'replaced by a newer connection of the same agent');
    connection.send({
      type: 'welcome',
      protocol: AGENT_PROTOCOL,
      workspace: { id: identity.workspaceId, name: identity.workspaceName, ownerName: identity.ownerName },
      buildId: identity.buildId,
      manifest: identity.manifest,
      heartbeatMs,
    });
    log.info(
      { ...ref, buildId: identity.buildId, agentVersion: hello.agentVersion, protocol: hello.protocol, state: hello.state },
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
      message: `A new connection with the token of this ${agentPhrase(refOf(identity))}, from ${newer.address}, replaced the open one from ${before?.address ?? 'an unknown address'}` +
        (sameProcess
          ? ' (it names the same agent process as the open one: most likely a reconnect).'
          : ' (a different agent process). If you did not restart the agent, workspace code may be using its token: restart the workspace to issue a new one.'),
      detail: { agent: identity.agentName, olderAddress: before?.address ?? null, newerAddress: newer.address, olderInstance: before?.instance ?? null, newerInstance: newer.instance },
    });
  };

  /**
   * A service's agent whose connection closed without den asking it to stop, while its workspace
   * runs (a build that replaces the service's container is not news): the owner sees it in `den
   * events` at once, naming the agent. Whether it is gone for good is the reconciler's to judge,
   * after its grace period, as for the main agent.
   */
  const recordServiceAgentLost = (ref: AgentRef, code: number, reason: string) => {
    const check = db.selectFrom('workspaces').select('status').where('id', '=', ref.workspaceId).executeTakeFirst()
      .then((row) => {
        if (row?.status !== 'running') return;
        recordEvent({
          workspaceId: ref.workspaceId,
          kind: 'agent_disconnected',
          message: `The ${agentPhrase(ref)} disconnected (${reason || `close code ${code}`}). Exec into that service works again once it reconnects; if it does not, start the workspace again (den start).`,
          detail: { agent: ref.agent, code, reason },
        });
      }, (error: unknown) => log.error({ err: error, ...ref }, 'could not read the workspace status to record an agent\'s disconnection'))
      .finally(() => recording.delete(check));
    recording.add(check);
  };

  /** The agent is gone for good (stopped): the next start is a new agent process and build. */
  const forgetAgent = (ref: AgentRef) => {
    logSeqs.forget(agentKey(ref));
    states.delete(agentKey(ref));
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
          log.warn({ ...refOf(identity), version }, 'agent speaks an unsupported protocol major');
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
      for (const key of keys) if (!connections.get(key)?.isOpen) recordPresence(parseAgentKey(key), at);
    },

    stateOf(target) {
      return states.get(agentKey(target));
    },

    sizes() {
      return { connections: connections.size, states: states.size, logSequences: logSeqs.size(), persisting: persisting.size };
    },

    async waitForReady(target, buildId, options) {
      // the store and the bus: the agent may be connected to another replica
      const ref = agentRef(target);
      return ready.wait(ref, buildId, { ...options, agent: agentPhrase(ref) });
    },

    isConnected(target) {
      return connections.get(agentKey(target))?.isOpen ?? false;
    },

    async shutdown(target, options) {
      const ref = agentRef(target);
      const connection = connections.get(agentKey(ref));
      if (!connection?.isOpen) return forgetAgent(ref);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, options.timeoutMs)));
      connection.send({ type: 'shutdown', graceful: true, reason: 'the workspace is stopping' });
      await Promise.race([connection.whenClosed, timeout]);
      clearTimeout(timer);
      connection.close(AGENT_CLOSE.shutdown, 'workspace stopped');
      // the last states it reported (shutting_down, off) are in the store when we return
      await persisting.get(agentKey(ref));
      forgetAgent(ref);
    },

    async exec(target, request: ExecRequest): Promise<ExecSession> {
      const ref = agentRef(target);
      const connection = connections.get(agentKey(ref));
      if (!connection?.isOpen) {
        throw new AppError('AGENT_NOT_CONNECTED', `The ${agentPhrase(ref)} is not connected. Wait for the workspace to be running (\`den show\`) and try again.`);
      }
      return openExecSession((spec, window, attach) => connection.openChannel(spec, window, (channel, peerWindow) =>
        attach(channel, peerWindow, { send: (frame) => connection.send(frame), release: () => connection.release(channel) })), request);
    },

    async openChannel(target, spec, window, attach) {
      const ref = agentRef(target);
      const connection = connections.get(agentKey(ref));
      if (!connection?.isOpen) {
        throw new AppError('AGENT_NOT_CONNECTED', `The ${agentPhrase(ref)} is not connected. Wait a few seconds (it reconnects by itself) and try again.`);
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

function refOf(identity: AgentIdentity): AgentRef {
  return { workspaceId: identity.workspaceId, agent: identity.agentName };
}

/** "workspace agent" or "agent of service api", for sentences. */
function agentPhrase(ref: AgentRef): string {
  return ref.agent === MAIN_AGENT ? 'workspace agent' : `agent of service ${ref.agent}`;
}
