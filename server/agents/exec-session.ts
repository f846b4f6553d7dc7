import { Duplex, Readable } from 'node:stream';
import { AppError } from '../../protocol/errors.ts';
import { DEFAULT_CHANNEL_WINDOW, type AgentFrame, type ExecOpen } from '../../protocol/agent.ts';
import { ChannelSender, ReceiveWindow } from '../../protocol/agent-flow.ts';
import type { AgentHub, ChannelEndpoint, ExecRequest, ExecSession, OutputDivert } from './hub-types.ts';

/** Keeps at most this much unread output per stream in the server before the agent stops sending; below the channel window so credit is granted while the buffer drains. */
const READ_HIGH_WATER = 64 * 1024;

/** pty size when an exec asks for a tty without giving one */
const DEFAULT_TTY = { cols: 80, rows: 24 };

/** Opens an exec channel through `openChannel` (of this process's hub or across replicas) as an ExecSession. */
export async function openExecSession(openChannel: (spec: ExecOpen, window: number, attach: Parameters<AgentHub['openChannel']>[3]) => Promise<number>, request: ExecRequest): Promise<ExecSession> {
  let session: ExecSession | undefined;
  const spec: ExecOpen = {
    kind: 'exec',
    command: request.command,
    ...(request.env ? { env: request.env } : {}),
    ...(request.cwd ? { cwd: request.cwd } : {}),
    ...(request.tty ? { tty: request.ttySize ?? DEFAULT_TTY } : {}),
  };
  await openChannel(spec, DEFAULT_CHANNEL_WINDOW, (channel, peerWindow, link) => {
    const created = createExecSession(channel, peerWindow, (frame) => link.send(frame), () => link.release());
    session = created.session;
    return created.endpoint;
  });
  return session!;
}

/**
 * The server end of an exec channel as the AgentHub's ExecSession: stdin is a Writable whose
 * writes complete as the agent's credit allows; stdout/stderr are Readables that grant credit
 * back only as the consumer reads them, so a consumer that stops reading stops the process in
 * the workspace and holds at most one window of output here.
 */
export function createExecSession(
  channel: number,
  peerWindow: number,
  send: (frame: AgentFrame) => void,
  release: () => void,
  localWindow = DEFAULT_CHANNEL_WINDOW,
): { session: ExecSession; endpoint: ChannelEndpoint; localWindow: number } {
  const sender = new ChannelSender(channel, peerWindow, send);
  const window = new ReceiveWindow(localWindow);
  let received = 0;
  let accounted = 0;
  /** divertOutput: who takes stdout payloads instead of stdio, and how many of them it still holds */
  let diverted: ((payload: Buffer) => void) | undefined;
  let held = 0;
  let closed = false;
  let exitSignal: string | undefined;
  let resolveExit!: (code: number) => void;
  let rejectExit!: (error: Error) => void;
  const exit = new Promise<number>((resolve, reject) => {
    resolveExit = resolve;
    rejectExit = reject;
  });
  exit.catch(() => {}); // callers that only read the streams must not trip an unhandled rejection

  const grantConsumed = () => {
    const buffered = stdio.readableLength + stderr.readableLength + held;
    const consumed = received - buffered;
    const delta = consumed - accounted;
    if (delta <= 0 || closed) return;
    accounted = consumed;
    const bytes = window.consume(delta);
    if (bytes > 0) send({ type: 'window', channel, bytes });
  };
  const finish = () => {
    if (closed) return;
    closed = true;
    sender.close();
    release();
  };

  const stdio = new Duplex({
    // ending both sides is not the end of the command (the exit status follows); only an explicit destroy abandons it
    autoDestroy: false,
    readableHighWaterMark: READ_HIGH_WATER,
    read: grantConsumed,
    write(chunk: Buffer, _encoding, callback) {
      // after the end, stdin is dropped rather than raising an 'error' event nobody may listen to
      if (closed) return callback();
      sender.write('data', chunk, () => callback());
    },
    final(callback) {
      if (!closed) send({ type: 'eof', channel });
      callback();
    },
    destroy(error, callback) {
      // the consumer gave up: end the process in the workspace
      if (!closed) {
        send({ type: 'close', channel });
        finish();
        rejectExit(new AppError('EXEC_FAILED', 'The command was abandoned before it exited.'));
      }
      callback(error);
    },
  });
  const stderr = new Readable({ highWaterMark: READ_HIGH_WATER, read: grantConsumed });

  let outputEnded = false;
  const endOutput = () => {
    if (outputEnded) return;
    outputEnded = true;
    stdio.push(null);
    stderr.push(null);
  };
  /** The agent broke a rule of the channel: close it with a coded error; the consumer gets AGENT_PROTOCOL_ERROR. */
  const violation = (code: string, message: string) => {
    send({ type: 'close', channel, error: { code, message } });
    endOutput();
    finish();
    rejectExit(new AppError('AGENT_PROTOCOL_ERROR', `${message} The command was stopped; run it again, and restart the workspace if it keeps happening.`));
  };
  const endpoint: ChannelEndpoint = {
    onData(type, payload) {
      if (closed) return;
      // pushing after the end raises ERR_STREAM_PUSH_AFTER_EOF; that once stopped the whole server
      if (outputEnded) return violation('AGENT_PROTOCOL_ERROR', 'The workspace agent sent output after it had ended its output (eof).');
      if (!window.receive(payload.byteLength)) return violation('FLOW_CONTROL_VIOLATION', 'The workspace agent sent more output than the window allowed.');
      received += payload.byteLength;
      const chunk = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
      if (type === 'data' && diverted) diverted(chunk);
      else (type === 'data' ? stdio : stderr).push(chunk);
      grantConsumed();
    },
    onWindow(bytes) {
      if (!closed) sender.grant(bytes);
    },
    onEof() {
      if (!closed) endOutput();
    },
    onClose(frame) {
      if (closed) return;
      endOutput();
      finish();
      exitSignal = frame.signal;
      if (frame.exitCode !== undefined) resolveExit(frame.exitCode);
      else rejectExit(new AppError('EXEC_FAILED', frame.error ? `The command ended abnormally: ${frame.error.message}` : 'The command ended without an exit status.'));
    },
    onLinkLost() {
      if (closed) return;
      finish();
      endOutput();
      rejectExit(new AppError('AGENT_NOT_CONNECTED', 'The workspace agent disconnected while the command ran. Run it again once the workspace is back.'));
    },
  };

  const session: ExecSession = {
    stdio,
    stderr,
    exit,
    get signal() {
      return exitSignal;
    },
    closeStdin() {
      stdio.end();
    },
    kill(signal = 'SIGTERM') {
      if (!closed) send({ type: 'signal', channel, signal });
    },
    resize(cols, rows) {
      if (!closed) send({ type: 'resize', channel, cols, rows });
    },
    divertOutput(take): OutputDivert {
      diverted = take;
      return {
        deliver: (payload) => {
          if (!outputEnded) stdio.push(payload);
        },
        hold: (bytes) => {
          held += bytes;
        },
        release: (bytes) => {
          held -= bytes;
          grantConsumed();
        },
      };
    },
  };
  return { session, endpoint, localWindow };
}
