import type { FastifyBaseLogger } from 'fastify';
import type { WebSocket } from 'ws';
import { AppError, isAppError } from '../../protocol/errors.ts';
import {
  EXEC_STREAM,
  decodeExecData,
  encodeExecData,
  execClientMessageSchema,
  execStartSchema,
  parseExecMessage,
  type ExecServerMessage,
} from '../../protocol/exec.ts';
import type { AgentHub, ExecSession } from './hub-types.ts';

/** The client must send `start` within this time. */
const START_TIMEOUT_MS = 10_000;
/** Output queued in the user's socket above which we stop reading the agent channel (and so stop granting it credit). */
const SOCKET_HIGH_WATER = 256 * 1024;
const SOCKET_LOW_WATER = 64 * 1024;
/** The close code when access ends (protocol/exec.ts), as for terminals. */
const EXEC_CLOSE_UNAUTHORIZED = 4001;

/**
 * Relays one user exec websocket (protocol/exec.ts) onto an agent exec channel. Backpressure
 * runs end to end: a slow client leaves output unread in the ExecSession, which withholds
 * credit from the agent, which pauses the process's pipes; a slow process leaves stdin writes
 * pending, which pauses reading the client socket.
 */
export function relayExec(socket: WebSocket, hub: AgentHub, workspaceId: string, log: FastifyBaseLogger): { revoke(error: AppError): void } {
  let session: ExecSession | undefined;
  let finished = false;
  const sendJson = (message: ExecServerMessage) => {
    if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(message));
  };
  const fail = (error: unknown, closeCode = 4000) => {
    if (finished) return;
    finished = true;
    const appError = isAppError(error) ? error : new AppError('EXEC_FAILED', 'The command failed inside den. The server log has the details.', { cause: error });
    if (!isAppError(error)) log.error({ err: error }, 'exec relay failed');
    sendJson({ type: 'error', error: appError.toEnvelope().error });
    socket.close(closeCode, appError.code);
    session?.stdio.destroy();
  };

  const startTimer = setTimeout(() => fail(new AppError('BAD_REQUEST', 'The exec request did not start in time: send the start message first.')), START_TIMEOUT_MS);
  socket.on('close', () => {
    clearTimeout(startTimer);
    // the client went away: abandon the command (the agent ends the process)
    if (!finished) session?.stdio.destroy();
    finished = true;
  });

  let started = false;
  let onInput: ((data: Buffer, isBinary: boolean) => void) | undefined;
  // messages that arrive after `start` but before the channel is open (stdin sent eagerly)
  const early: [Buffer, boolean][] = [];
  socket.on('message', (data: Buffer, isBinary: boolean) => {
    if (started) {
      if (onInput) onInput(data, isBinary);
      else early.push([data, isBinary]);
      return;
    }
    started = true;
    clearTimeout(startTimer);
    const start = isBinary ? undefined : parseExecMessage(execStartSchema, data.toString('utf8'));
    if (!start) return fail(new AppError('BAD_REQUEST', 'The first exec message must be {"type":"start","command":[...]} with a non-empty command.'));
    hub.exec(workspaceId, { command: start.command, env: start.env, cwd: start.cwd, tty: Boolean(start.tty), ttySize: start.tty }).then(
      (opened) => {
        session = opened;
        if (finished) return opened.stdio.destroy();
        sendJson({ type: 'started' });
        onInput = wire(opened);
        for (const [queuedData, queuedBinary] of early.splice(0)) onInput(queuedData, queuedBinary);
      },
      fail,
    );
  });

  function wire(opened: ExecSession): (data: Buffer, isBinary: boolean) => void {
    // output: agent -> client, paused while the client's socket is behind
    let queued = 0;
    let paused = false;
    const outputs = [opened.stdio, opened.stderr] as const;
    const forward = (stream: number) => (chunk: Buffer) => {
      if (socket.readyState !== socket.OPEN) return;
      queued += chunk.byteLength;
      socket.send(encodeExecData(stream, chunk), () => {
        queued -= chunk.byteLength;
        if (paused && queued <= SOCKET_LOW_WATER) {
          paused = false;
          outputs.forEach((s) => s.resume());
        }
      });
      if (!paused && queued > SOCKET_HIGH_WATER) {
        paused = true;
        outputs.forEach((s) => s.pause());
      }
    };
    opened.stdio.on('data', forward(EXEC_STREAM.stdout));
    opened.stderr.on('data', forward(EXEC_STREAM.stderr));
    const ended = (stream: NodeJS.ReadableStream) => new Promise<void>((resolve) => stream.once('end', resolve));
    Promise.all([ended(opened.stdio), ended(opened.stderr), opened.exit]).then(([, , code]) => {
      if (finished) return;
      finished = true;
      sendJson({ type: 'exit', code });
      socket.close(1000, 'exited');
    }, fail);

    // input: client -> agent, the socket paused while stdin writes are pending
    return (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        const frame = decodeExecData(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        if (!frame || frame.stream !== EXEC_STREAM.stdin) return fail(new AppError('BAD_REQUEST', 'Binary exec messages from the client must carry stdin (stream 0).'));
        if (!opened.stdio.write(frame.payload)) {
          socket.pause();
          opened.stdio.once('drain', () => socket.resume());
        }
        return;
      }
      const message = parseExecMessage(execClientMessageSchema, data.toString('utf8'));
      if (!message || message.type === 'start') return fail(new AppError('BAD_REQUEST', 'The exec message is not valid (expected stdin_eof, signal or resize).'));
      if (message.type === 'stdin_eof') opened.closeStdin();
      else if (message.type === 'signal') opened.kill(message.signal as NodeJS.Signals);
      else opened.resize(message.cols, message.rows);
    };
  }

  /** The access that opened it was taken away: 4001, and the command is abandoned (the agent ends it). */
  return { revoke: (error) => fail(error, EXEC_CLOSE_UNAUTHORIZED) };
}
