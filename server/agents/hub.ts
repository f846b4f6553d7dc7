import type { Logger } from 'pino';
import type { WebSocket } from 'ws';
import {
  AGENT_CLOSE,
  AGENT_PROTOCOL,
  DEFAULT_CHANNEL_WINDOW,
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
import type { Clock } from '../store/time.ts';
import { AgentConnection } from './connection.ts';
import { createExecSession } from './exec-session.ts';
import type { AgentHub, ExecRequest, ExecSession } from './hub-types.ts';
import { currentAgentBuild, type AgentIdentity } from './tokens.ts';
import { createReadyWaiters } from './ready.ts';

export interface AgentHubDeps {
  config: Config;
  store: Store;
  clock: Clock;
  log: Logger;
  buildLogs: BuildLogSink;
  metrics: Pick<Metrics, 'agentsConnected'>;
  /** how often the server pings each agent; a connection silent for 3 intervals is dropped */
  heartbeatMs?: number;
}

/** The server side of agent connections in this process. */
export interface LocalAgentHub extends AgentHub {
  /** Takes over an authenticated agent websocket: handshake (hello/welcome), then frames. */
  accept(socket: WebSocket, identity: AgentIdentity): void;
  /** The lifecycle state last reported by the workspace's agent to this process. */
  stateOf(workspaceId: string): { buildId: string; state: LifecycleState; message?: string } | undefined;
}

const DEFAULT_HEARTBEAT_MS = 15_000;
/** An agent that connects must say hello within this time. */
const HELLO_TIMEOUT_MS = 10_000;
/** pty size when an exec asks for a tty without giving one */
const DEFAULT_TTY = { cols: 80, rows: 24 };

export function createAgentHub(deps: AgentHubDeps): LocalAgentHub {
  const log = deps.log.child({ module: 'agents' });
  const db = deps.store.db;
  const heartbeatMs = deps.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  const connections = new Map<string, AgentConnection>();
  const states = new Map<string, { buildId: string; state: LifecycleState; message?: string }>();
  /** highest log seq appended per agent process (instance), so frames resent after a reconnect are not appended twice */
  const logSeqs = new Map<string, number>();
  const waiters = createReadyWaiters();
  const persisting = new Map<string, Promise<void>>();
  let closing = false;

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

  /** Records a lifecycle report: memory first, then the store (serialised per workspace), then waiters. */
  const onLifecycle = (identity: AgentIdentity, state: LifecycleState, message?: string) => {
    const previous = states.get(identity.workspaceId);
    const changed = previous?.buildId !== identity.buildId || previous.state !== state;
    states.set(identity.workspaceId, { buildId: identity.buildId, state, ...(message ? { message } : {}) });
    if (changed) {
      deps.buildLogs.append(identity.buildId, { stream: 'system', step: 'agent', line: `The agent reported ${state}${message ? `: ${message}` : '.'}` });
    }
    const before = persisting.get(identity.workspaceId) ?? Promise.resolve();
    const write = before
      .then(() => db.updateTable('workspaces').set({ agent_state: state }).where('id', '=', identity.workspaceId).execute())
      .then(
        () => undefined,
        (error: unknown) => log.error({ err: error, workspaceId: identity.workspaceId }, 'could not record the agent state'),
      )
      .then(() => waiters.settle(identity.workspaceId, identity.buildId, state, message));
    persisting.set(identity.workspaceId, write);
  };

  const onLog = (connection: AgentConnection, instance: string, frame: ControlFrameOf<'log'>) => {
    const seen = logSeqs.get(instance) ?? 0;
    if (frame.seq > seen) {
      logSeqs.set(instance, frame.seq);
      for (const line of frame.lines) {
        deps.buildLogs.append(connection.identity.buildId, { stream: frame.stream, step: frame.script, line });
      }
    }
    connection.send({ type: 'log_ack', seq: frame.seq });
  };

  const register = (socket: WebSocket, identity: AgentIdentity, hello: ControlFrameOf<'hello'>) => {
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
        }
        log.info({ workspaceId: identity.workspaceId, code, reason }, 'agent disconnected');
      },
      onProtocolError(message, count) {
        log.warn({ workspaceId: identity.workspaceId, count }, `agent frame rejected: ${message}`);
      },
      onInternalError(error, channel) {
        log.error({ err: error, workspaceId: identity.workspaceId, channel }, 'a channel of the agent link failed unexpectedly; closed that channel');
      },
    }, log);
    const older = connections.get(identity.workspaceId);
    connections.set(identity.workspaceId, connection);
    updateGauge();
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

  const hub: LocalAgentHub = {
    accept(socket, identity) {
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
        register(socket, identity, hello);
      }));
    },

    stateOf(workspaceId) {
      return states.get(workspaceId);
    },

    async waitForReady(workspaceId, buildId, options) {
      const known = states.get(workspaceId);
      if (known?.buildId === buildId && (known.state === 'ready' || known.state === 'start_error')) {
        return waiters.outcome(known.state, known.message);
      }
      // Another replica (or this one before a restart) may have recorded it already.
      const row = await db.selectFrom('workspaces').select('agent_state').where('id', '=', workspaceId).executeTakeFirst();
      if ((row?.agent_state === 'ready' || row?.agent_state === 'start_error') && (await currentAgentBuild(db, workspaceId)) === buildId) {
        return waiters.outcome(row.agent_state, undefined);
      }
      if (closing) throw waiters.canceled();
      return waiters.wait(workspaceId, buildId, options);
    },

    isConnected(workspaceId) {
      return connections.get(workspaceId)?.isOpen ?? false;
    },

    async shutdown(workspaceId, options) {
      const connection = connections.get(workspaceId);
      if (!connection?.isOpen) return;
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, options.timeoutMs)));
      connection.send({ type: 'shutdown', graceful: true, reason: 'the workspace is stopping' });
      await Promise.race([connection.whenClosed, timeout]);
      clearTimeout(timer);
      connection.close(AGENT_CLOSE.shutdown, 'workspace stopped');
      // the last states it reported (shutting_down, off) are in the store when we return
      await persisting.get(workspaceId);
    },

    async exec(workspaceId, request: ExecRequest): Promise<ExecSession> {
      const connection = connections.get(workspaceId);
      if (!connection?.isOpen) {
        throw new AppError('AGENT_NOT_CONNECTED', 'The workspace agent is not connected. Wait for the workspace to be running (`den show`) and try again.');
      }
      let session: ExecSession | undefined;
      const spec = {
        kind: 'exec' as const,
        command: request.command,
        ...(request.env ? { env: request.env } : {}),
        ...(request.cwd ? { cwd: request.cwd } : {}),
        ...(request.tty ? { tty: request.ttySize ?? DEFAULT_TTY } : {}),
      };
      await connection.openChannel(spec, DEFAULT_CHANNEL_WINDOW, (channel, peerWindow) => {
        const created = createExecSession(channel, peerWindow, (frame) => connection.send(frame), () => connection.release(channel));
        session = created.session;
        return created.endpoint;
      });
      return session!;
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
      waiters.cancelAll();
      // 1001 "going away": the agent keeps its state and reconnects to the next server
      for (const connection of connections.values()) connection.close(1001, 'server shutting down');
      connections.clear();
      updateGauge();
      await Promise.all(persisting.values());
    },
  };
  return hub;
}
