import { AppError } from '../../protocol/errors.ts';
import {
  decodeClientMessage,
  encodeOutput,
  encodeServerMessage,
  isTerminalProtocolSupported,
  TERMINAL_CLOSE,
  TERMINAL_PROTOCOL,
  TerminalFrameError,
  type ServerControl,
} from '../../protocol/terminal.ts';
import type { TerminalSink } from './client.ts';
import type { TerminalSessions } from './registry.ts';
import type { TerminalAttachment, TerminalSessionOptions } from './session.ts';

/** What a connection puts into a session it starts (the workspace env and home, from the link). */
export type NewSessionOptions = Pick<TerminalSessionOptions, 'env' | 'cwd' | 'command'>;

/** The little a terminal connection needs from its transport (a ws WebSocket fits; so does a channel of the agent link). */
export interface TerminalTransport {
  send(message: string | Uint8Array): void;
  close(code: number, reason: string): void;
}

export interface TerminalConnection {
  /** feed every message the client sent, in order */
  message(data: string | Uint8Array): void;
  /** the transport went away: detach, the session lives on */
  closed(): void;
}

/**
 * Speaks protocol/terminal.ts for one client on top of the session registry: the first message
 * must be `attach`; afterwards input, ack, resize and close map onto the attachment. Bad
 * messages get an `error` and a close code, never an exception out of here.
 */
export function serveTerminalConnection(transport: TerminalTransport, sessions: TerminalSessions, newSession: NewSessionOptions = {}): TerminalConnection {
  let attachment: TerminalAttachment | undefined;
  let sessionId: string | undefined;
  let ended = false;

  const control = (message: ServerControl) => transport.send(encodeServerMessage(message));
  const end = (code: number, error?: { code: string; message: string }) => {
    if (ended) return;
    ended = true;
    if (error) control({ type: 'error', code: error.code, message: error.message });
    attachment?.detach();
    transport.close(code, error?.code ?? 'session ended');
  };

  const sink: TerminalSink = {
    attached: (info) => control({ type: 'attached', protocol: TERMINAL_PROTOCOL, ...info }),
    output: (data) => transport.send(encodeOutput(data)),
    resized: (cols, rows) => control({ type: 'resized', cols, rows }),
    exit: (status) => {
      control({ type: 'exit', code: status.code, ...(status.signal ? { signal: status.signal } : {}) });
      end(TERMINAL_CLOSE.sessionEnded);
    },
    detached: (reason) => end(reason.code === 'TERMINAL_CLIENT_TOO_SLOW' ? TERMINAL_CLOSE.clientTooSlow : TERMINAL_CLOSE.goingAway, reason),
  };

  return {
    message(data) {
      if (ended) return;
      try {
        const message = decodeClientMessage(data);
        if (!attachment) {
          if (message.type !== 'attach') throw new TerminalFrameError(`The first terminal message must be 'attach', not '${message.type}'.`);
          if (!isTerminalProtocolSupported(message.protocol)) {
            return end(TERMINAL_CLOSE.protocolUnsupported, { code: 'TERMINAL_PROTOCOL_UNSUPPORTED', message: `This workspace speaks terminal protocol ${TERMINAL_PROTOCOL.major}.x; reload the page to get a matching client.` });
          }
          const session = message.sessionId ? sessions.require(message.sessionId) : sessions.create({
                ...newSession,
                command: message.command ?? newSession.command,
                env: { ...newSession.env, ...message.env },
                cols: message.cols,
                rows: message.rows,
              });
          sessionId = session.id;
          attachment = session.attach(sink, { cols: message.cols, rows: message.rows });
          return;
        }
        switch (message.type) {
          case 'attach':
            throw new TerminalFrameError('This connection is attached already; open another connection for another session.');
          case 'input':
            return attachment.input(message.data);
          case 'ack':
            return attachment.ack(message.bytes);
          case 'resize':
            return attachment.resize(message.cols, message.rows);
          case 'close':
            // the shell's exit then reaches every client as `exit`
            sessions.close(sessionId!);
            return;
        }
      } catch (error) {
        if (error instanceof TerminalFrameError) return end(TERMINAL_CLOSE.protocolError, { code: 'TERMINAL_MESSAGE_INVALID', message: error.message });
        if (error instanceof AppError) return end(error.code === 'TERMINAL_SESSION_NOT_FOUND' ? TERMINAL_CLOSE.sessionNotFound : TERMINAL_CLOSE.goingAway, error);
        throw error;
      }
    },
    closed() {
      ended = true;
      attachment?.detach();
    },
  };
}
