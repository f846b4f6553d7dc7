import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import * as pty from 'node-pty';
import type { ErrorCode } from '../../protocol/errors.ts';
import { clampCols, clampRows, DEFAULT_SCROLLBACK, MAX_DATA_PAYLOAD, MAX_SCROLLBACK } from '../../protocol/terminal.ts';
import { PtyWriter } from '../pty-writer.ts';
import { Client, type TerminalSink } from './client.ts';
import { ScreenMirror } from './mirror.ts';
import { realTimers, type TerminalTimers } from './timers.ts';

/**
 * Flow-control defaults, in bytes of pty output.
 * - high 256 KiB: at the ~20-35 MB/s xterm.js parses, the backlog a client may hold is 7-13 ms of
 *   parsing, so Ctrl-C during a flood shows the prompt well inside 200 ms (the xterm.js guide
 *   warns above 500 KB); while covering the loopback round trip of two hops many times over, so
 *   throughput is not limited by the window (measured in docs/terminal.md).
 * - low 64 KiB: resume with a quarter left, so the pty is not toggled on every ack.
 * - stall 30 s: a client that keeps the pty paused (above low while it is paused) and
 *   acknowledges nothing for this long is detached (a throttled background tab or a dead link
 *   must not freeze the shell for the others).
 */
export interface TerminalFlow {
  highWatermark: number;
  lowWatermark: number;
  stallTimeoutMs: number;
}
export const DEFAULT_FLOW: Readonly<TerminalFlow> = Object.freeze({ highWatermark: 256 * 1024, lowWatermark: 64 * 1024, stallTimeoutMs: 30_000 });
/** Idle time after which the mirror is swapped for its serialized form (see ScreenMirror.hibernate). */
export const DEFAULT_HIBERNATE_AFTER_MS = 60_000;
/** How long a hung-up process group gets between SIGHUP and SIGKILL. */
const KILL_GRACE_MS = 3_000;

/**
 * Output batching. A pty hands over at most ~4 KB per read, one read per event-loop turn, and
 * each read became a message on every hop (agent link frame, server websocket message, browser
 * message) with a syscall each; during a flood that is where the CPU went. A read of
 * BATCH_FROM_BYTES or more (more is probably coming) is held, with what follows, for up to
 * BATCH_DELAY_MS or BATCH_MAX_BYTES and sent as one message. Small output with nothing held —
 * an echoed keystroke, a prompt — goes out at once. (VS Code's terminal holds output for 5 ms.)
 */
const BATCH_FROM_BYTES = 1024;
const BATCH_DELAY_MS = 4;
const BATCH_MAX_BYTES = 32 * 1024;

export interface TerminalSessionOptions {
  id?: string;
  /** argv; default the workspace user's login shell */
  command?: string[];
  /** the workspace environment; TERM and COLORTERM are set on top */
  env?: Record<string, string>;
  cwd?: string;
  cols?: number;
  rows?: number;
  scrollback?: number;
  flow?: Partial<TerminalFlow>;
  /** idle ms before the mirror hibernates; 0 never */
  hibernateAfterMs?: number;
  timers?: TerminalTimers;
}

/** The handle a client uses to talk to the session. */
export interface TerminalAttachment {
  input(data: string | Uint8Array): void;
  /** OUTPUT bytes the client's parser consumed since its previous ack */
  ack(bytes: number): void;
  resize(cols: number, rows: number): void;
  /** leave the session running (socket closed, tab reloaded) */
  detach(): void;
  readonly unackedBytes: number;
}

export interface TerminalSessionInfo {
  id: string;
  pid: number;
  cols: number;
  rows: number;
  clients: number;
  createdAt: number;
  /** when the last client left, epoch ms; undefined while attached */
  orphanedAt?: number;
  title: string;
  /** the argv the session runs */
  command: string[];
}

/**
 * One shell on a pty, mirrored into a headless terminal, shared by any number of clients.
 * Output goes to every client and the mirror; the pty is paused while the mirror or any client
 * is more than the high watermark behind, and resumed when all are under the low watermark.
 */
export class TerminalSession {
  readonly id: string;
  readonly createdAt: number;
  readonly command: string[];
  readonly #pty: pty.IPty;
  /** input goes to the pty on the main thread, not through node-pty's thread-pool write */
  readonly #input: PtyWriter;
  readonly #mirror: ScreenMirror;
  readonly #clients = new Set<Client>();
  readonly #flow: TerminalFlow;
  readonly #timers: TerminalTimers;
  readonly #exitListeners: Array<(status: { code: number; signal?: number }) => void> = [];
  readonly #clientCountListeners: Array<(count: number) => void> = [];
  #cols: number;
  #rows: number;
  #paused = false;
  #exited: { code: number; signal?: number } | undefined;
  #killTimer: unknown;
  #hibernateTimer: unknown;
  readonly #hibernateAfterMs: number;
  #lastOutputAt: number;
  orphanedAt: number | undefined;
  /** output read but not yet sent to the clients (the mirror has it): see BATCH_* */
  #batch: Uint8Array[] = [];
  #batchBytes = 0;
  #batchTimer: NodeJS.Timeout | undefined;
  /** bytes read from the pty since start, and the times the pty was paused (tests and benchmarks read them) */
  outputBytes = 0;
  pauseCount = 0;

  constructor(options: TerminalSessionOptions = {}) {
    this.id = options.id ?? randomUUID();
    this.#flow = { ...DEFAULT_FLOW, ...options.flow };
    this.#timers = options.timers ?? realTimers;
    this.createdAt = this.#timers.now();
    this.orphanedAt = this.createdAt;
    this.#lastOutputAt = this.createdAt;
    this.#hibernateAfterMs = options.hibernateAfterMs ?? DEFAULT_HIBERNATE_AFTER_MS;
    this.#cols = clampCols(options.cols ?? 80);
    this.#rows = clampRows(options.rows ?? 24);
    const scrollback = Math.min(MAX_SCROLLBACK, Math.max(0, Math.trunc(options.scrollback ?? DEFAULT_SCROLLBACK)));
    this.command = options.command ?? [defaultShell(options.env), '-l'];
    const [file, ...args] = this.command;
    const env: Record<string, string> = { ...options.env, TERM: 'xterm-256color', COLORTERM: 'truecolor' };
    this.#mirror = new ScreenMirror(this.#cols, this.#rows, scrollback);
    this.#mirror.onDrained = () => this.#updateFlow();
    // encoding null: Buffers straight from the fd, no UTF-8 decode/re-encode per chunk
    this.#pty = pty.spawn(file, args, { name: 'xterm-256color', cols: this.#cols, rows: this.#rows, cwd: options.cwd ?? env.HOME ?? homedir(), env, encoding: null });
    this.#input = new PtyWriter(this.#pty);
    this.#pty.onData((chunk) => this.#onOutput(chunk as unknown as Uint8Array));
    this.#pty.onExit(({ exitCode, signal }) => this.#onExit(exitCode, signal));
  }

  get pid(): number {
    return this.#pty.pid;
  }

  get paused(): boolean {
    return this.#paused;
  }

  get exited(): boolean {
    return this.#exited !== undefined;
  }

  get clientCount(): number {
    return this.#clients.size;
  }

  /** Bytes the mirror has not parsed yet (part of what bounds memory). */
  get mirrorBacklogBytes(): number {
    return this.#mirror.backlogBytes;
  }

  info(): TerminalSessionInfo {
    return { id: this.id, pid: this.pid, cols: this.#cols, rows: this.#rows, clients: this.#clients.size, createdAt: this.createdAt, orphanedAt: this.orphanedAt, title: this.#mirror.title, command: this.command };
  }

  /**
   * Joins a client. Its size becomes the pty's (it is the most recently active). The sink gets
   * `attached` with a snapshot of the screen once the mirror has parsed everything printed so
   * far, then exactly the output that followed: bytes printed meanwhile wait in the client's
   * queue (counted against its watermark, so they stay bounded).
   */
  attach(sink: TerminalSink, size: { cols: number; rows: number }): TerminalAttachment {
    const client = new Client(sink);
    if (this.#exited) {
      queueMicrotask(() => sink.exit(this.#exited!));
      return this.#attachment(client);
    }
    // held output goes to the clients already here: the mirror has it, so the snapshot covers it for this one
    this.#flushOutput();
    this.#clients.add(client);
    this.orphanedAt = undefined;
    this.#resizeFor(client, size.cols, size.rows);
    void this.#mirror.snapshot().then((snapshot) => {
      if (!this.#clients.has(client)) return;
      sink.attached({ sessionId: this.id, cols: this.#cols, rows: this.#rows, snapshot, title: this.#mirror.title || undefined });
      client.flushPending();
      if (this.#exited) this.#finishClient(client);
    });
    this.#emitClientCount();
    return this.#attachment(client);
  }

  onExit(listener: (status: { code: number; signal?: number }) => void): void {
    this.#exitListeners.push(listener);
  }

  onClientCount(listener: (count: number) => void): void {
    this.#clientCountListeners.push(listener);
  }

  /** Hangs up the shell's process group (SIGHUP, then SIGKILL after a grace period). Clients get `exit` once it is gone. */
  close(): void {
    if (this.#exited) return;
    this.#signalGroup('SIGHUP');
    this.#killTimer ??= this.#timers.setTimeout(() => this.#signalGroup('SIGKILL'), KILL_GRACE_MS);
  }

  /** Test seam: the mirror's current screen as text. */
  screenLines(): Promise<string[]> {
    return this.#mirror.screenLines();
  }

  // --- what a client's attachment does --------------------------------------------------------------

  #attachment(client: Client): TerminalAttachment {
    return {
      input: (data) => this.#clientInput(client, data),
      ack: (bytes) => this.#clientAck(client, bytes),
      resize: (cols, rows) => this.#clientResize(client, cols, rows),
      detach: () => this.#clientDetach(client),
      get unackedBytes() {
        return client.unacked;
      },
    };
  }

  #clientInput(client: Client, data: string | Uint8Array): void {
    if (this.#exited || !this.#clients.has(client)) return;
    this.#resizeFor(client, client.cols, client.rows);
    this.#input.write(typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
  }

  #clientAck(client: Client, bytes: number): void {
    client.acked(bytes, this.#timers);
    this.#updateFlow();
  }

  #clientResize(client: Client, cols: number, rows: number): void {
    if (!this.#clients.has(client)) return;
    this.#resizeFor(client, cols, rows);
  }

  #clientDetach(client: Client, reason?: { code: ErrorCode; message: string }): void {
    if (!this.#clients.delete(client)) return;
    client.stop(this.#timers);
    if (reason) client.sink.detached(reason);
    if (this.#clients.size === 0) this.orphanedAt = this.#timers.now();
    this.#updateFlow();
    this.#emitClientCount();
  }

  // --- internals --------------------------------------------------------------------------------

  #onOutput(chunk: Uint8Array): void {
    this.outputBytes += chunk.byteLength;
    this.#lastOutputAt = this.#timers.now();
    const hold = this.#batchBytes > 0 || chunk.byteLength >= BATCH_FROM_BYTES;
    this.#batch.push(chunk);
    this.#batchBytes += chunk.byteLength;
    if (!hold || this.#batchBytes >= BATCH_MAX_BYTES) {
      this.#sendHeld();
    } else {
      // a real timer, not the injected ones: this is about syscalls, not behaviour tests steer
      this.#batchTimer ??= setTimeout(() => {
        this.#batchTimer = undefined;
        this.#flushOutput();
      }, BATCH_DELAY_MS).unref();
    }
    // The mirror after the clients: waking a hibernated one (a new headless terminal, 1-14 ms)
    // must not hold up the echo of the first keystroke after a quiet minute. Nothing can attach
    // in between, so a snapshot still covers every byte sent before it.
    this.#mirror.write(chunk);
    this.#armHibernation();
    this.#updateFlow();
  }

  /** Sends the held output to every client and looks at the flow again. */
  #flushOutput(): void {
    if (this.#sendHeld()) this.#updateFlow();
  }

  /** Sends the held output to every client; false when nothing was held. */
  #sendHeld(): boolean {
    if (this.#batchTimer !== undefined) clearTimeout(this.#batchTimer);
    this.#batchTimer = undefined;
    if (this.#batchBytes === 0) return false;
    const data = this.#batch.length === 1 ? this.#batch[0] : Buffer.concat(this.#batch, this.#batchBytes);
    this.#batch = [];
    this.#batchBytes = 0;
    for (let offset = 0; offset < data.byteLength; offset += MAX_DATA_PAYLOAD) {
      const piece = offset === 0 && data.byteLength <= MAX_DATA_PAYLOAD ? data : data.subarray(offset, offset + MAX_DATA_PAYLOAD);
      for (const client of this.#clients) client.send(piece);
    }
    return true;
  }

  #armHibernation(): void {
    if (this.#hibernateAfterMs <= 0 || this.#hibernateTimer !== undefined || this.#exited) return;
    const due = this.#lastOutputAt + this.#hibernateAfterMs - this.#timers.now();
    this.#hibernateTimer = this.#timers.setTimeout(() => {
      this.#hibernateTimer = undefined;
      if (this.#exited) return;
      if (this.#timers.now() - this.#lastOutputAt >= this.#hibernateAfterMs) this.#mirror.hibernate();
      // still busy (output, a queued snapshot): look again later
      if (!this.#mirror.hibernating) this.#armHibernation();
    }, Math.max(1_000, due));
  }

  /** True while the mirror is held in serialized form. */
  get hibernating(): boolean {
    return this.#mirror.hibernating;
  }

  #updateFlow(): void {
    if (this.#exited) return;
    let behind = this.#mirror.backlogBytes;
    for (const client of this.#clients) behind = Math.max(behind, client.unacked);
    if (!this.#paused && behind > this.#flow.highWatermark) {
      this.#paused = true;
      this.pauseCount++;
      this.#pty.pause();
    } else if (this.#paused && behind <= this.#flow.lowWatermark) {
      this.#paused = false;
      this.#pty.resume();
    }
    // whoever keeps the pty paused (above the low watermark) must go on acknowledging, or it is
    // detached: also when the mirror's backlog paused the pty and this client then stopped
    if (!this.#paused) return;
    for (const client of this.#clients) {
      if (client.unacked > this.#flow.lowWatermark) client.watchStall(this.#timers, this.#flow.stallTimeoutMs, () => this.#dropSlow(client));
    }
  }

  #dropSlow(client: Client): void {
    this.#clientDetach(client, { code: 'TERMINAL_CLIENT_TOO_SLOW', message: `The terminal stopped acknowledging output for ${Math.round(this.#flow.stallTimeoutMs / 1000)} s and was detached; reconnect to continue where the session is now.` });
  }

  #resizeFor(client: Client, cols: number, rows: number): void {
    client.cols = clampCols(cols);
    client.rows = clampRows(rows);
    if (this.#exited || (client.cols === this.#cols && client.rows === this.#rows)) return;
    this.#cols = client.cols;
    this.#rows = client.rows;
    // output laid out for the old size reaches the clients before they hear of the new one
    this.#flushOutput();
    this.#pty.resize(this.#cols, this.#rows);
    this.#mirror.resize(this.#cols, this.#rows);
    for (const other of this.#clients) if (other !== client && other.ready) other.sink.resized(this.#cols, this.#rows);
  }

  #onExit(exitCode: number, signal: number | undefined): void {
    this.#input.close();
    this.#flushOutput();
    // a shell killed by signal n reports 128 + n, as shells do
    this.#exited = signal ? { code: 128 + signal, signal } : { code: exitCode };
    if (this.#killTimer !== undefined) this.#timers.clearTimeout(this.#killTimer);
    if (this.#hibernateTimer !== undefined) this.#timers.clearTimeout(this.#hibernateTimer);
    // clients still waiting for their snapshot finish in attach(); the others end now
    for (const client of this.#clients) if (client.ready) this.#finishClient(client);
    void this.#mirror.snapshot().then(() => this.#mirror.dispose());
    for (const listener of this.#exitListeners) listener(this.#exited);
  }

  #finishClient(client: Client): void {
    this.#clients.delete(client);
    client.stop(this.#timers);
    client.sink.exit(this.#exited!);
    this.#emitClientCount();
  }

  #signalGroup(signal: NodeJS.Signals): void {
    try {
      // node-pty makes the shell a session leader, so -pid is its whole process group
      process.kill(-this.#pty.pid, signal);
    } catch {
      // right after spawn the child may not have called setsid yet: signal the shell itself
      try {
        process.kill(this.#pty.pid, signal);
      } catch {
        // already gone
      }
    }
  }

  #emitClientCount(): void {
    for (const listener of this.#clientCountListeners) listener(this.#clients.size);
  }
}

function defaultShell(env: Record<string, string> | undefined): string {
  const shell = env?.SHELL ?? process.env.SHELL;
  if (shell && existsSync(shell)) return shell;
  return existsSync('/bin/bash') ? '/bin/bash' : '/bin/sh';
}
