import { DEFAULT_CHANNEL_WINDOW, type ChannelSpec } from '../../protocol/agent.ts';
import { ChannelSender, ReceiveWindow } from '../../protocol/agent-flow.ts';
import { encodeRecord, MAX_CLIENT_TEXT_BYTES, MAX_DATA_PAYLOAD, RecordReader, TERMINAL_CLOSE, TerminalFrameError } from '../../protocol/terminal.ts';
import type { ChannelContext, ChannelHandler } from '../exec.ts';
import type { TerminalSessions } from './registry.ts';
import { serveTerminalConnection } from './socket.ts';

type TerminalOpen = Extract<ChannelSpec, { kind: 'terminal' }>;

/** A client record is one client websocket message: the larger of a text message and a binary INPUT frame. */
const MAX_CLIENT_RECORD = Math.max(MAX_CLIENT_TEXT_BYTES, MAX_DATA_PAYLOAD + 1);

/**
 * The agent side of a `terminal` channel (plug into startAgent's `channels.terminal`). The channel
 * is one attachment: the open spec is the attach (sessionId absent = new session), then the
 * channel's byte stream carries protocol/terminal.ts messages as records both ways, so the server
 * relays browser messages without understanding more than their validity.
 *
 * Two flow controls stack here. Link credit (ChannelSender) bounds what the server buffers for
 * this terminal; the session's end-to-end acks (from the browser's xterm.js) pause the pty. Our
 * queue in the ChannelSender cannot outgrow the session's high watermark, because bytes stuck in
 * it are unacknowledged by definition. When the channel goes away (link drop, server restart,
 * browser closed) the client only detaches: the session lives on for the next attach.
 */
export function terminalChannelOpener(sessions: TerminalSessions) {
  return (channel: number, spec: TerminalOpen, peerWindow: number, context: ChannelContext, onClosed: () => void): ChannelHandler => {
    const sender = new ChannelSender(channel, peerWindow, (frame) => context.send(frame));
    const inbound = new ReceiveWindow(DEFAULT_CHANNEL_WINDOW);
    const reader = new RecordReader(MAX_CLIENT_RECORD);
    let finished = false;
    const finish = (error?: { code: string; message: string }) => {
      if (finished) return;
      finished = true;
      sender.close();
      context.send({ type: 'close', channel, ...(error ? { error } : {}) });
      onClosed();
    };

    if (spec.sessionId !== undefined && !sessions.get(spec.sessionId)) {
      context.send({ type: 'open_error', channel, code: 'TERMINAL_SESSION_NOT_FOUND', message: `Terminal session '${spec.sessionId}' has ended or never existed; open a new terminal.` });
      finished = true;
      onClosed();
      return { onData() {}, onEof() {}, onWindow() {}, onSignal() {}, onResize() {}, abort() {} };
    }
    context.send({ type: 'open_ok', channel, window: DEFAULT_CHANNEL_WINDOW });
    const connection = serveTerminalConnection(
      {
        send: (message) => sender.write('data', encodeRecord(message)),
        // an `exit` or `error` record went ahead; the close only tells the server which websocket code to use
        close: (code, reason) => finish(code === TERMINAL_CLOSE.sessionEnded ? undefined : { code: reason.slice(0, 64), message: reason }),
      },
      sessions,
      // a new session runs in the workspace: its env (manifest included) and home, plus what the opener asked for
      { env: { ...context.baseEnv(), ...spec.env }, cwd: context.home(), command: spec.command?.length ? spec.command : undefined },
    );
    connection.message(JSON.stringify({ type: 'attach', sessionId: spec.sessionId, cols: spec.cols, rows: spec.rows }));

    return {
      onData(payload) {
        if (finished) return;
        if (!inbound.receive(payload.byteLength)) {
          connection.closed();
          return finish({ code: 'FLOW_CONTROL_VIOLATION', message: 'The server sent more terminal input than the window allowed.' });
        }
        try {
          for (const message of reader.push(payload)) connection.message(message);
        } catch (error) {
          if (!(error instanceof TerminalFrameError)) throw error;
          connection.closed();
          return finish({ code: 'TERMINAL_MESSAGE_INVALID', message: error.message });
        }
        // a `close` record may have ended the channel meanwhile
        if (finished) return;
        // input goes straight to the pty (its own buffer): granted back in quarter windows like any channel, not per keystroke
        const grant = inbound.consume(payload.byteLength);
        if (grant > 0) context.send({ type: 'window', channel, bytes: grant });
      },
      onEof() {},
      onWindow(bytes) {
        sender.grant(bytes);
      },
      // only the agent's graceful shutdown signals a terminal channel (the server never does): the
      // workspace is stopping, so hang the shell up; its `exit` closes the channel and lets the shutdown finish
      onSignal() {
        if (!finished) connection.message(JSON.stringify({ type: 'close' }));
      },
      onResize(cols, rows) {
        if (!finished) connection.message(JSON.stringify({ type: 'resize', cols, rows }));
      },
      abort() {
        connection.closed();
        finished = true;
        sender.close();
      },
    };
  };
}
