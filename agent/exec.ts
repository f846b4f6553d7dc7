import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import type { Readable } from 'node:stream';
import { CHANNEL_HEADER_BYTES, DEFAULT_CHANNEL_WINDOW, MAX_DATA_PAYLOAD, type AgentFrame, type ExecOpen } from '../protocol/agent.ts';
import { ChannelSender, ReceiveWindow } from '../protocol/agent-flow.ts';
import { PtyWriter } from './pty-writer.ts';
import { SlabCopies, SlabPool, sendFramedInPlace } from './read-slabs.ts';

/**
 * Where a busy command's stdout and stderr reads are copied for their frames (agent/read-slabs.ts):
 * four full reads per slab, so a stream holds about a window of them; a few kept for the next command.
 */
const PIPE_SLABS = new SlabPool(4 * (CHANNEL_HEADER_BYTES + MAX_DATA_PAYLOAD), 4);

/** What a channel implementation needs from the link. */
export interface ChannelContext {
  /** `written`: called once the link's socket has written the frame (never when the link is down) */
  send(frame: AgentFrame, written?: () => void): void;
  /** the environment every process starts from (agent env without its token + manifest env) */
  baseEnv(): Record<string, string>;
  home(): string;
}

/** The agent side of one open channel; the link routes frames to it. */
export interface ChannelHandler {
  onData(payload: Uint8Array): void;
  onEof(): void;
  onWindow(bytes: number): void;
  onSignal(signal: NodeJS.Signals): void;
  onResize(cols: number, rows: number): void;
  /**
   * The channel is gone: the server closed it or the link dropped. Exec ends its process;
   * a terminal channel would only detach (its session outlives the link).
   */
  abort(): void;
}

/**
 * Starts `spec.command` (argv, no shell) and answers open_ok once it runs or open_error when it
 * cannot start. stdout/stderr go out as DATA/STDERR under the server's credit (the pipes are
 * paused while credit is exhausted); stdin comes in under the window we advertise, granted back
 * as the child's stdin drains. `onClosed` runs once the channel is finished on our side.
 */
export function openExecChannel(channel: number, spec: ExecOpen, peerWindow: number, context: ChannelContext, onClosed: () => void): ChannelHandler {
  const env = { ...context.baseEnv(), ...spec.env };
  const cwd = spec.cwd ?? context.home();
  const sender = new ChannelSender(channel, peerWindow, (frame) => sendFramedInPlace(context.send, frame));
  const stdinWindow = new ReceiveWindow(DEFAULT_CHANNEL_WINDOW);
  let finished = false;
  const finish: Finish = (close) => {
    if (finished) return;
    finished = true;
    sender.close();
    if (close) context.send(close);
    onClosed();
  };
  const violation = () => {
    handler.abort();
    finish({ type: 'close', channel, error: { code: 'FLOW_CONTROL_VIOLATION', message: 'The server sent more stdin than the window allowed.' } });
  };
  const handler = spec.tty ? startPty(channel, spec, env, cwd, sender, context, finish, violation) : startPipes(channel, spec, env, cwd, sender, stdinWindow, context, finish, violation);
  return handler;
}

/** Ends the channel on our side; without a frame when open_error already ended it. */
type Finish = (close: Extract<AgentFrame, { type: 'close' }> | undefined) => void;

function startPipes(
  channel: number,
  spec: ExecOpen,
  env: Record<string, string>,
  cwd: string,
  sender: ChannelSender,
  stdinWindow: ReceiveWindow,
  context: ChannelContext,
  finish: Finish,
  violation: () => void,
): ChannelHandler {
  let child: ChildProcess;
  if (!existsSync(cwd)) {
    const message = `The directory ${cwd} does not exist in the workspace.`;
    queueMicrotask(() => {
      context.send({ type: 'open_error', channel, code: 'EXEC_FAILED', message });
      finish(undefined);
    });
    return inertHandler();
  }
  try {
    child = spawn(spec.command[0], spec.command.slice(1), { cwd, env, stdio: ['pipe', 'pipe', 'pipe'] });
  } catch (error) {
    queueMicrotask(() => openError(channel, spec, error as Error, context, finish));
    return inertHandler();
  }
  let spawned = false;
  child.once('spawn', () => {
    spawned = true;
    context.send({ type: 'open_ok', channel, window: DEFAULT_CHANNEL_WINDOW });
  });
  child.once('error', (error) => {
    if (!spawned) openError(channel, spec, error, context, finish);
  });
  child.stdin!.on('error', () => {}); // EPIPE when the process exits without reading stdin

  const outputs: Readable[] = [child.stdout!, child.stderr!];
  sender.onDrain = () => outputs.forEach((stream) => stream.resume());
  const pipeOut = (stream: Readable, type: 'data' | 'stderr') => {
    const copies = new SlabCopies(PIPE_SLABS);
    stream.on('data', (chunk: Buffer) => {
      const placed = copies.place(chunk);
      const sentAll = placed ? sender.write(type, placed.chunk, () => placed.slab.release(), true) : sender.write(type, chunk);
      if (!sentAll) stream.pause();
    });
    stream.once('close', () => copies.leave());
  };
  pipeOut(child.stdout!, 'data');
  pipeOut(child.stderr!, 'stderr');

  child.once('close', (code, signal) => {
    if (!spawned) return;
    // everything the process wrote must reach the server before the exit status
    const done = () => {
      context.send({ type: 'eof', channel });
      finish({ type: 'close', channel, exitCode: exitCodeOf(code, signal), ...(signal ? { signal } : {}) });
    };
    if (sender.queuedBytes === 0) done();
    else sender.onDrain = done;
  });

  return {
    onData(payload) {
      if (!stdinWindow.receive(payload.byteLength)) return violation();
      const stdin = child.stdin!;
      if (stdin.destroyed || stdin.writableEnded) return grant(channel, stdinWindow.consume(payload.byteLength, true), context);
      stdin.write(payload, () => grant(channel, stdinWindow.consume(payload.byteLength, stdin.writableLength === 0), context));
    },
    onEof() {
      child.stdin!.end();
    },
    onWindow(bytes) {
      sender.grant(bytes);
    },
    onSignal(signal) {
      if (child.exitCode === null) child.kill(signal);
    },
    onResize() {},
    abort() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
  };
}

function startPty(
  channel: number,
  spec: ExecOpen,
  env: Record<string, string>,
  cwd: string,
  sender: ChannelSender,
  context: ChannelContext,
  finish: Finish,
  violation: () => void,
): ChannelHandler {
  const stdinWindow = new ReceiveWindow(DEFAULT_CHANNEL_WINDOW);
  type Pty = import('node-pty').IPty;
  let pty: Pty | undefined;
  let writer: PtyWriter | undefined;
  let aborted = false;
  // after the exit, writes fail with EBADF and kill with ESRCH: frames still in flight are dropped
  let exited = false;
  const pending: Uint8Array[] = [];
  // node-pty is a native addon: load it only when a tty is asked for, so plain exec and agent start-up stay fast
  import('node-pty')
    .then((nodePty) => {
      if (aborted) return;
      pty = nodePty.spawn(spec.command[0], spec.command.slice(1), {
        name: 'xterm-256color',
        cols: spec.tty!.cols,
        rows: spec.tty!.rows,
        cwd,
        env: { TERM: 'xterm-256color', ...env },
      });
      context.send({ type: 'open_ok', channel, window: DEFAULT_CHANNEL_WINDOW });
      const started = pty;
      writer = new PtyWriter(started);
      sender.onDrain = () => started.resume();
      started.onData((text) => {
        if (!sender.write('data', Buffer.from(text, 'utf8'))) started.pause();
      });
      started.onExit(({ exitCode, signal }) => {
        exited = true;
        writer!.close();
        const name = signal ? signalName(signal) : undefined;
        const done = () => {
          context.send({ type: 'eof', channel });
          finish({ type: 'close', channel, exitCode: name ? exitCodeOf(null, name) : exitCode & 0xff, ...(name ? { signal: name } : {}) });
        };
        if (sender.queuedBytes === 0) done();
        else sender.onDrain = done;
      });
      for (const chunk of pending.splice(0)) writeInput(chunk);
    })
    .catch((error: Error) => openError(channel, spec, error, context, finish));

  // bytes, not text: a character split across two frames must reach the pty whole. Credit goes
  // back once the pty took the bytes (what waits here stays within the window), a quarter of the
  // window at a time, not in a frame per keystroke that the server reads on the echo's way.
  const writeInput = (payload: Uint8Array) => writer!.write(payload, () => grant(channel, stdinWindow.consume(payload.byteLength), context));

  return {
    onData(payload) {
      if (!stdinWindow.receive(payload.byteLength)) return violation();
      if (!pty) pending.push(payload);
      else if (!exited) writeInput(payload);
      else grant(channel, stdinWindow.consume(payload.byteLength), context);
    },
    onEof() {
      // after the input still waiting for the pty
      if (!exited) writer?.write(Uint8Array.of(4));
    },
    onWindow(bytes) {
      sender.grant(bytes);
    },
    onSignal(signal) {
      if (!exited) pty?.kill(signal);
    },
    onResize(cols, rows) {
      if (!exited) pty?.resize(cols, rows);
    },
    abort() {
      aborted = true;
      if (!exited) pty?.kill('SIGKILL');
    },
  };
}

/** 128 + signal number when killed by a signal, as shells report it. */
export function exitCodeOf(code: number | null, signal: NodeJS.Signals | string | null): number {
  if (code !== null) return code & 0xff;
  const number = signal ? (constants.signals as Record<string, number>)[signal] : undefined;
  return number ? 128 + number : 255;
}

function signalName(number: number): NodeJS.Signals | undefined {
  return (Object.entries(constants.signals) as [NodeJS.Signals, number][]).find(([, n]) => n === number)?.[0];
}

function grant(channel: number, bytes: number, context: ChannelContext): void {
  if (bytes > 0) context.send({ type: 'window', channel, bytes });
}

function openError(channel: number, spec: ExecOpen, error: Error, context: ChannelContext, finish: Finish): void {
  const code = (error as NodeJS.ErrnoException).code;
  const message =
    code === 'ENOENT'
      ? `The command '${spec.command[0]}' was not found in the workspace. Check its name and the PATH.`
      : code === 'EACCES'
        ? `The command '${spec.command[0]}' is not executable in the workspace.`
        : `The command '${spec.command[0]}' could not be started: ${error.message}.`;
  context.send({ type: 'open_error', channel, code: 'EXEC_FAILED', message });
  // open_error ends the channel; finish only releases our bookkeeping
  finish(undefined);
}

function inertHandler(): ChannelHandler {
  return { onData() {}, onEof() {}, onWindow() {}, onSignal() {}, onResize() {}, abort() {} };
}
