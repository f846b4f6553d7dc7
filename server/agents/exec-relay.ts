import type { FastifyBaseLogger } from 'fastify';
import type { WebSocket } from 'ws';
import { AppError, isAppError } from '../../protocol/errors.ts';
import {
  EXEC_STREAM,
  decodeExecData,
  encodeExecData,
  execClientMessageSchema,
  execStartSchema,
  MAX_EXEC_CONTROL_BYTES,
  type ExecServerMessage,
} from '../../protocol/exec.ts';
import { parseJsonFrame } from '../../protocol/json-frame.ts';
import { closeSocket, guardSocket } from '../http/socket-guard.ts';
import { agentRef, type AgentHub, type AgentTarget, type ExecSession } from './hub-types.ts';

/** The client must send `start` within this time. */
const START_TIMEOUT_MS = 10_000;
/** Output queued in the user's socket above which we stop reading the agent channel (and so stop granting it credit). */
const SOCKET_HIGH_WATER = 256 * 1024;
const SOCKET_LOW_WATER = 64 * 1024;
/** The close code when access ends (protocol/exec.ts), as for terminals. */
const EXEC_CLOSE_UNAUTHORIZED = 4001;
/** Client messages held while the channel opens (stdin sent eagerly); beyond this the client is misbehaving. */
const MAX_EARLY_BYTES = 1024 * 1024;

/**
 * Relays one user exec websocket (protocol/exec.ts) onto an agent exec channel. Backpressure
 * runs end to end: a slow client leaves output unread in the ExecSession, which withholds
 * credit from the agent, which pauses the process's pipes; a slow process leaves stdin writes
 * pending, which pauses reading the client socket.
 */
export function relayExec(socket: WebSocket, hub: AgentHub, agent: AgentTarget, log: FastifyBaseLogger): { revoke(error: AppError): void } {
  const ref = agentRef(agent);
  let session: ExecSession | undefined;
  let finished = false;
  const guard = guardSocket(socket, log, 'exec websocket');
  const sendJson = (message: ExecServerMessage) => {
    if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(message));
  };
  const fail = (error: unknown, closeCode = 4000) => {
    if (finished) return;
    finished = true;
    const appError = isAppError(error) ? error : new AppError('EXEC_FAILED', 'The command failed inside den. The server log has the details.', { cause: error });
    if (!isAppError(error)) log.error({ err: error }, 'exec relay failed');
    else log.info({ ...ref, code: appError.code }, `exec ended: ${appError.message}`);
    sendJson({ type: 'error', error: appError.toEnvelope().error });
    closeSocket(socket, closeCode, appError.code);
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
  let earlyBytes = 0;
  socket.on('message', guard.wrap((data: Buffer, isBinary: boolean) => {
    if (started) {
      if (onInput) return onInput(data, isBinary);
      earlyBytes += data.byteLength;
      if (earlyBytes > MAX_EARLY_BYTES) return fail(new AppError('BAD_REQUEST', 'Too much input before the command started; wait for `started` before sending more than 1 MiB.'));
      early.push([data, isBinary]);
      return;
    }
    started = true;
    clearTimeout(startTimer);
    const parsed = isBinary ? undefined : parseJsonFrame(data.toString('utf8'), MAX_EXEC_CONTROL_BYTES, execStartSchema, 'exec start message');
    if (!parsed?.ok) {
      const why = parsed ? ` (${parsed.message})` : '';
      return fail(new AppError('BAD_REQUEST', `The first exec message must be {"type":"start","command":[...]} with a non-empty command${why}.`));
    }
    const start = parsed.value;
    hub.exec(ref, { command: start.command, env: start.env, cwd: start.cwd, tty: Boolean(start.tty), ttySize: start.tty }).then(
      (opened) => {
        session = opened;
        if (finished) return opened.stdio.destroy();
        sendJson({ type: 'started' });
        onInput = wire(opened);
        for (const [queuedData, queuedBinary] of early.splice(0)) onInput(queuedData, queuedBinary);
      },
      fail,
    ).catch(guard.trip);
  }));

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
    // an 'error' event without a listener stops the process; here it ends this exec
    opened.stdio.on('error', fail);
    opened.stderr.on('error', fail);
    let stdinEnded = false;
    const ended = (stream: NodeJS.ReadableStream) => new Promise<void>((resolve) => stream.once('end', resolve));
    Promise.all([ended(opened.stdio), ended(opened.stderr), opened.exit]).then(([, , code]) => {
      if (finished) return;
      finished = true;
      sendJson({ type: 'exit', code });
      closeSocket(socket, 1000, 'exited');
    }, fail).catch(guard.trip);

    // input: client -> agent, the socket paused while stdin writes are pending
    return (data: Buffer, isBinary: boolean) => {
      // messages queued before the channel opened may follow a failure
      if (finished) return;
      if (isBinary) {
        const frame = decodeExecData(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        if (!frame || frame.stream !== EXEC_STREAM.stdin) return fail(new AppError('BAD_REQUEST', 'Binary exec messages from the client must carry stdin (stream 0).'));
        // writing after end() would raise an 'error' event; the client broke the order, so it learns why
        if (stdinEnded) return fail(new AppError('BAD_REQUEST', 'The client sent stdin after stdin_eof; send all input before stdin_eof.'));
        if (!opened.stdio.write(frame.payload)) {
          socket.pause();
          opened.stdio.once('drain', () => socket.resume());
        }
        return;
      }
      const parsed = parseJsonFrame(data.toString('utf8'), MAX_EXEC_CONTROL_BYTES, execClientMessageSchema, 'exec message');
      if (!parsed.ok) return fail(new AppError('BAD_REQUEST', `${parsed.message} Send stdin_eof, signal or resize once the command started.`));
      const message = parsed.value;
      if (message.type === 'start') return fail(new AppError('BAD_REQUEST', 'The command started already; open another exec connection for another command.'));
      if (message.type === 'stdin_eof') {
        stdinEnded = true;
        opened.closeStdin();
      } else if (message.type === 'signal') opened.kill(message.signal as NodeJS.Signals);
      else opened.resize(message.cols, message.rows);
    };
  }

  /** The access that opened it was taken away: 4001, and the command is abandoned (the agent ends it). */
  return { revoke: (error) => fail(error, EXEC_CLOSE_UNAUTHORIZED) };
}
