import type { FastifyBaseLogger } from 'fastify';
import type { WebSocket } from 'ws';
import { DEFAULT_CHANNEL_WINDOW, MAIN_AGENT, type ChannelSpec } from '../../protocol/agent.ts';
import { ChannelSender, ReceiveWindow } from '../../protocol/agent-flow.ts';
import { isAppError } from '../../protocol/errors.ts';
import {
  closeCodeForError,
  decodeClientMessage,
  encodeClientMessage,
  encodeRecord,
  encodeServerMessage,
  isTerminalProtocolSupported,
  MAX_SERVER_TEXT_BYTES,
  RecordReader,
  TERMINAL_CLOSE,
  TERMINAL_PROTOCOL,
  TerminalFrameError,
  type AttachMessage,
} from '../../protocol/terminal.ts';
import type { AgentHub, ChannelEndpoint, ChannelLink } from '../agents/hub-types.ts';
import { closeSocket, guardSocket } from '../http/socket-guard.ts';

/** The client must send `attach` within this time. */
const ATTACH_TIMEOUT_MS = 10_000;
/** Client messages held while the channel opens (eager input after attach); beyond this the client is misbehaving. */
const MAX_EARLY_BYTES = 1024 * 1024;
/** Pings keep idle terminals alive through proxies and find browsers that vanished without a close. */
const KEEPALIVE_MS = 30_000;
/** A record from the agent is one server message: the largest is `attached` with its snapshot. */
const MAX_AGENT_RECORD = MAX_SERVER_TEXT_BYTES + 1;

export interface TerminalWorkspace {
  id: string;
  /** the service whose agent the terminal is on; absent: the workspace's own agent */
  service?: string;
  /** "owner/name", for messages */
  label: string;
  status: string;
  /** when den observed that the workspace is down: what died and how to start it again */
  down?: string;
}

type Failure = { code: string; message: string };

/**
 * Relays one terminal websocket (protocol/terminal.ts, browser or CLI) onto a `terminal` channel
 * of the workspace agent. The server validates every client message (a bad one closes the socket
 * 4004 and never reaches the agent) and forwards the agent's records as websocket messages
 * without parsing them.
 *
 * Link credit is granted back to the agent only once the websocket has written a record out
 * (the `send` callback), so this server holds at most one channel window (256 KiB) per terminal
 * and a slow browser stalls only its own channel. The end-to-end `ack`s travel to the agent as
 * records like any other message; its session pauses the pty on them.
 */
export function relayTerminal(
  socket: WebSocket,
  hub: AgentHub,
  workspace: TerminalWorkspace,
  log: FastifyBaseLogger,
): { shutdown(): void; revoke(error: Failure): void } {
  const agent = { workspaceId: workspace.id, agent: workspace.service ?? MAIN_AGENT };
  let finished = false;
  let channel: { id: number; link: ChannelLink; sender: ChannelSender } | undefined;
  let early: Array<string | Uint8Array> | undefined;
  let earlyBytes = 0;
  const guard = guardSocket(socket, log, 'terminal websocket');

  const fail = (code: number, error?: Failure) => {
    if (finished) return;
    finished = true;
    clearTimeout(attachTimer);
    if (error && socket.readyState === socket.OPEN) socket.send(encodeServerMessage({ type: 'error', code: error.code, message: error.message }));
    closeChannel();
    closeSocket(socket, code, error?.code ?? 'session ended');
  };
  const closeChannel = () => {
    if (!channel) return;
    channel.sender.close();
    channel.link.send({ type: 'close', channel: channel.id });
    channel.link.release();
    channel = undefined;
  };
  const forward = (message: string | Uint8Array) => {
    if (!channel) {
      earlyBytes += typeof message === 'string' ? message.length : message.byteLength;
      if (earlyBytes > MAX_EARLY_BYTES) return fail(TERMINAL_CLOSE.protocolError, { code: 'TERMINAL_MESSAGE_INVALID', message: 'Too much input before the terminal was attached; wait for `attached`.' });
      early?.push(message);
      return;
    }
    // input waits for the agent's credit; stop reading the client meanwhile (its TCP window then fills)
    if (!channel.sender.write('data', encodeRecord(message))) socket.pause();
  };

  const attachTimer = setTimeout(
    () => fail(TERMINAL_CLOSE.protocolError, { code: 'TERMINAL_MESSAGE_INVALID', message: 'The terminal client did not send `attach` in time.' }),
    ATTACH_TIMEOUT_MS,
  );
  let alive = true;
  socket.on('pong', () => (alive = true));
  const keepalive = setInterval(() => {
    // no pong since the last ping: the peer is gone; terminating detaches it like a close would
    if (!alive) return socket.terminate();
    alive = false;
    socket.ping();
  }, KEEPALIVE_MS);
  keepalive.unref();
  socket.on('close', () => {
    clearInterval(keepalive);
    clearTimeout(attachTimer);
    // a reload or a network drop only detaches: the agent keeps the session for the next attach
    finished = true;
    closeChannel();
  });
  socket.on('error', (error) => log.debug({ err: error }, 'terminal websocket error'));

  socket.on('message', guard.wrap((data: Buffer, isBinary: boolean) => {
    if (finished) return;
    let message;
    try {
      message = decodeClientMessage(isBinary ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data.toString('utf8'));
    } catch (error) {
      // anything but a TerminalFrameError is a bug of ours: the guard logs it and closes 1011
      if (!(error instanceof TerminalFrameError)) throw error;
      log.info({ workspaceId: workspace.id }, `terminal client message refused: ${error.message}`);
      return fail(TERMINAL_CLOSE.protocolError, { code: 'TERMINAL_MESSAGE_INVALID', message: error.message });
    }
    if (early === undefined && channel === undefined) {
      if (message.type !== 'attach') {
        return fail(TERMINAL_CLOSE.protocolError, { code: 'TERMINAL_MESSAGE_INVALID', message: `The first terminal message must be 'attach', not '${message.type}'.` });
      }
      clearTimeout(attachTimer);
      early = [];
      return attach(message);
    }
    if (message.type === 'attach') {
      return fail(TERMINAL_CLOSE.protocolError, { code: 'TERMINAL_MESSAGE_INVALID', message: 'This connection is attached already; open another connection for another session.' });
    }
    // binary input is forwarded as received (it was validated); control messages re-encoded from what was validated (sizes clamped)
    forward(isBinary ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : encodeClientMessage(message));
  }));

  function attach(message: AttachMessage): void {
    if (!isTerminalProtocolSupported(message.protocol)) {
      return fail(TERMINAL_CLOSE.protocolUnsupported, {
        code: 'TERMINAL_PROTOCOL_UNSUPPORTED',
        message: `This den server speaks terminal protocol ${TERMINAL_PROTOCOL.major}.x; update the client (reload the page or upgrade the den CLI).`,
      });
    }
    if (!hub.isConnected(agent)) {
      if (workspace.down) return fail(TERMINAL_CLOSE.workspaceNotRunning, { code: 'WORKSPACE_DOWN', message: workspace.down });
      if (workspace.status !== 'running' && workspace.status !== 'starting') {
        return fail(TERMINAL_CLOSE.workspaceNotRunning, { code: 'WORKSPACE_NOT_RUNNING', message: `Workspace '${workspace.label}' is ${workspace.status}. Start it with \`den start\` and open the terminal again.` });
      }
      return fail(TERMINAL_CLOSE.goingAway, {
        code: 'AGENT_NOT_CONNECTED',
        message: `The ${workspace.service ? `agent of service ${workspace.service}` : 'agent'} of workspace '${workspace.label}' is not connected right now; reconnecting shortly.`,
      });
    }
    const spec: ChannelSpec = {
      kind: 'terminal',
      cols: message.cols,
      rows: message.rows,
      ...(message.sessionId ? { sessionId: message.sessionId } : {}),
      ...(message.command ? { command: message.command } : {}),
      ...(message.env ? { env: message.env } : {}),
    };
    hub.openChannel(agent, spec, DEFAULT_CHANNEL_WINDOW, (id, peerWindow, link) => {
      const sender = new ChannelSender(id, peerWindow, (frame) => link.send(frame));
      sender.onDrain = () => socket.resume();
      channel = { id, link, sender };
      return endpoint();
    }).then(
      () => {
        if (finished) return closeChannel();
        for (const queued of early!.splice(0)) forward(queued);
      },
      (error: unknown) => {
        if (!isAppError(error)) log.error({ err: error }, 'opening a terminal channel failed');
        const failure = isAppError(error) ? { code: error.code, message: error.message } : { code: 'AGENT_NOT_CONNECTED', message: 'The terminal could not be opened; try again.' };
        fail(closeCodeForError(failure.code), failure);
      },
    ).catch(guard.trip);
  }

  /** What the agent's frames of this channel do. */
  function endpoint(): ChannelEndpoint {
    const window = new ReceiveWindow(DEFAULT_CHANNEL_WINDOW);
    const reader = new RecordReader(MAX_AGENT_RECORD);
    const grant = (bytes: number) => {
      if (!channel) return;
      const granted = window.consume(bytes);
      if (granted > 0) channel.link.send({ type: 'window', channel: channel.id, bytes: granted });
    };
    return {
      onData(type, payload) {
        if (type !== 'data' || !channel) return;
        if (!window.receive(payload.byteLength)) {
          log.warn({ workspaceId: workspace.id }, 'the agent overran the terminal channel window');
          return fail(TERMINAL_CLOSE.goingAway, { code: 'AGENT_PROTOCOL_ERROR', message: 'The workspace agent broke the flow-control rules; reconnect.' });
        }
        let records: Array<string | Uint8Array>;
        try {
          records = reader.push(payload);
        } catch (error) {
          log.warn({ err: error }, 'the agent sent a malformed terminal record');
          return fail(TERMINAL_CLOSE.goingAway, { code: 'AGENT_PROTOCOL_ERROR', message: 'The workspace agent sent a malformed terminal message; reconnect.' });
        }
        // bytes of an incomplete record wait in the reader (bounded by one record), so they are granted now: a snapshot may exceed the window
        if (records.length === 0 || socket.readyState !== socket.OPEN) return grant(payload.byteLength);
        records.forEach((record, index) => {
          const last = index === records.length - 1;
          socket.send(record, { binary: typeof record !== 'string' }, last ? () => grant(payload.byteLength) : undefined);
        });
      },
      onWindow(bytes) {
        channel?.sender.grant(bytes);
      },
      onEof() {},
      onClose(frame) {
        // the agent ended the channel: after `exit` (no error) or an `error` record it already sent
        channel?.sender.close();
        channel = undefined;
        if (finished) return;
        finished = true;
        closeSocket(socket, closeCodeForError(frame.error?.code), frame.error?.code ?? 'session ended');
      },
      onLinkLost() {
        channel = undefined;
        fail(TERMINAL_CLOSE.goingAway, { code: 'AGENT_NOT_CONNECTED', message: 'The connection to the workspace agent dropped; reconnecting.' });
      },
    };
  }

  return {
    /** Server shutdown: the client learns to reconnect (4009) and the agent keeps the session. */
    shutdown: () =>
      fail(TERMINAL_CLOSE.goingAway, { code: 'SERVER_SHUTTING_DOWN', message: 'The den server is restarting; the terminal reconnects to the same session when it is back.' }),
    /** The access that opened it was taken away: detached at once, nothing more reaches the agent. */
    revoke: (error) => fail(closeCodeForError(error.code), error),
  };
}
