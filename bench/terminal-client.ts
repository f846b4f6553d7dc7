/**
 * A benchmark client for protocol/terminal.ts. It behaves like the browser: output is parsed by
 * a headless xterm.js and acknowledged from the write callbacks (the watermark scheme of
 * xterm.js's flow-control guide, acks as protocol/terminal-acks.ts says), so floods measure what
 * a user sees, and `discarded` counts what xterm.js would have thrown away.
 *
 * The measurements (echo, throughput, Ctrl-C under flood, reattach) take a websocket URL, so
 * they run unchanged against den and against bench/terminal-reference.ts; the runner is
 * bench/terminal.ts.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import headless from '@xterm/headless';
import WebSocket from 'ws';
import { OutputAcks } from '../protocol/terminal-acks.ts';
import { decodeServerMessage, encodeClientMessage, type ClientMessage } from '../protocol/terminal.ts';

export const PROMPT = 'den$ ';

export interface ConnectOptions {
  sessionId?: string;
  cols?: number;
  rows?: number;
  /** parse with headless xterm.js and ack what was parsed (default); false acks on receipt (transport ceiling) */
  parse?: boolean;
  /** extra headers, e.g. a session cookie for den */
  headers?: Record<string, string>;
  /** a new session's argv and extra environment (protocol 1.1; the reference servers choose their own shell) */
  command?: string[];
  env?: Record<string, string>;
}

interface Watch {
  marker: string;
  side: 'received' | 'parsed';
  window: string;
  resolve: (at: number) => void;
}

export class BenchTerminal {
  readonly ws: WebSocket;
  readonly term: InstanceType<typeof headless.Terminal> | undefined;
  sessionId = '';
  snapshot = '';
  /** ms from opening the socket to receiving `attached` */
  attachMs = 0;
  received = 0;
  parsed = 0;
  discarded = 0;
  exitCode: number | undefined;
  closedCode: number | undefined;
  /** the last few KB of received output, decoded */
  recentText = '';
  readonly #acks = new OutputAcks((bytes) => {
    if (this.ws.readyState === WebSocket.OPEN) this.send({ type: 'ack', bytes });
  });
  #pendingWrites = 0;
  #watches: Watch[] = [];
  readonly #receivedDecoder = new TextDecoder();
  readonly #parsedDecoder = new TextDecoder();

  private constructor(ws: WebSocket, parse: boolean, cols: number, rows: number) {
    this.ws = ws;
    this.term = parse ? new headless.Terminal({ cols, rows, scrollback: 1000, allowProposedApi: true }) : undefined;
  }

  static connect(url: string, options: ConnectOptions = {}): Promise<BenchTerminal> {
    const cols = options.cols ?? 120;
    const rows = options.rows ?? 40;
    const started = performance.now();
    const ws = new WebSocket(url, { perMessageDeflate: false, headers: options.headers });
    ws.binaryType = 'nodebuffer';
    const client = new BenchTerminal(ws, options.parse ?? true, cols, rows);
    return new Promise((resolve, reject) => {
      ws.once('error', reject);
      ws.once('open', () => {
        const fresh = options.sessionId === undefined;
        client.send({ type: 'attach', sessionId: options.sessionId, cols, rows, command: fresh ? options.command : undefined, env: fresh ? options.env : undefined });
      });
      ws.on('close', (code) => {
        client.closedCode = code;
        reject(new Error(`The terminal socket closed with ${code} before attaching.`));
      });
      ws.on('message', (data, isBinary) => {
        const message = decodeServerMessage(isBinary ? (data as Buffer) : data.toString());
        switch (message.type) {
          case 'attached':
            client.attachMs = performance.now() - started;
            client.sessionId = message.sessionId;
            client.snapshot = message.snapshot;
            client.term?.write(message.snapshot);
            return resolve(client);
          case 'output':
            return client.#output(message.data);
          case 'exit':
            client.exitCode = message.code;
            return;
          case 'error':
            return reject(new Error(`${message.code}: ${message.message}`));
        }
      });
    });
  }

  send(message: ClientMessage): void {
    this.ws.send(encodeClientMessage(message));
  }

  type(text: string): void {
    this.send({ type: 'input', data: text });
  }

  /** Resolves with performance.now() when `marker` has been received (or parsed) after this call. */
  when(marker: string, side: 'received' | 'parsed', timeoutMs = 60_000): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`Timed out after ${timeoutMs} ms waiting for '${marker}' (${side}).`)), timeoutMs);
      this.#watches.push({ marker, side, window: '', resolve: (at) => (clearTimeout(timer), resolve(at)) });
    });
  }

  /** Waits until no output arrived for `quietMs`. */
  async quiet(quietMs: number): Promise<void> {
    for (;;) {
      const before = this.received;
      await new Promise((resolve) => setTimeout(resolve, quietMs));
      if (this.received === before && this.#pendingWrites === 0) return;
    }
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.#acks.stop();
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      this.ws.once('close', () => resolve());
      this.ws.close(1000);
    });
  }

  #output(data: Uint8Array): void {
    this.received += data.byteLength;
    this.#acks.received(data.byteLength);
    const text = this.#receivedDecoder.decode(data, { stream: true });
    this.recentText = (this.recentText + text).slice(-4096);
    this.#check('received', text);
    if (!this.term) {
      this.#acks.consumed(data.byteLength);
      return;
    }
    this.#pendingWrites++;
    try {
      this.term.write(data, () => {
        this.#pendingWrites--;
        this.parsed += data.byteLength;
        this.#check('parsed', this.#parsedDecoder.decode(data, { stream: true }));
        this.#acks.consumed(data.byteLength);
      });
    } catch {
      // xterm.js refuses writes beyond 50 MB pending ("write data discarded"): what a browser would lose
      this.#pendingWrites--;
      this.discarded += data.byteLength;
      this.#acks.consumed(data.byteLength);
    }
  }

  #check(side: 'received' | 'parsed', text: string): void {
    if (this.#watches.length === 0) return;
    const now = performance.now();
    this.#watches = this.#watches.filter((watch) => {
      if (watch.side !== side) return true;
      const window = watch.window + text;
      if (window.includes(watch.marker)) {
        watch.resolve(now);
        return false;
      }
      watch.window = window.slice(-(watch.marker.length - 1));
      return true;
    });
  }
}

/** Opens a fresh session and waits for its first prompt. */
export async function openShell(url: string, options: ConnectOptions = {}): Promise<BenchTerminal> {
  const client = await BenchTerminal.connect(url, options);
  // output may have arrived in the same read as `attached`, before a watch could be set
  if (!client.snapshot.includes(PROMPT) && !client.recentText.includes(PROMPT)) await client.when(PROMPT, 'received', 10_000);
  await client.quiet(100);
  return client;
}

/** Keystroke echo: time from sending one character to the first output containing it (bash readline echo), `count` times. */
export async function measureEcho(url: string, count = 500, connect: ConnectOptions = {}): Promise<number[]> {
  const client = await openShell(url, connect);
  const samples: number[] = [];
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  for (let i = 0; i < count; i++) {
    if (i > 0 && i % 60 === 0) {
      client.type('\x15'); // Ctrl-U keeps the line short; not timed
      await client.quiet(20);
    }
    const letter = letters[i % letters.length];
    const seen = client.when(letter, 'received', 5_000);
    const sent = performance.now();
    client.type(letter);
    samples.push((await seen) - sent);
  }
  await closeSession(client);
  return samples;
}

/** `cat` of `file` with echo off; MB/s of output bytes (10^6 B) until the end marker arrived (parsed, when parsing). */
export async function measureThroughput(url: string, file: string, parse = true, connect: ConnectOptions = {}): Promise<{ mbPerS: number; bytes: number; discarded: number }> {
  const client = await openShell(url, { ...connect, parse });
  client.type('stty -echo\r');
  await client.quiet(300);
  const done = client.when('BENCH_2_END', parse ? 'parsed' : 'received', 120_000);
  const before = client.received;
  const started = performance.now();
  client.type(`cat ${file}; echo BENCH_$((1+1))_END\r`);
  const ended = await done;
  const bytes = client.received - before;
  const result = { mbPerS: bytes / 1e6 / ((ended - started) / 1000), bytes, discarded: client.discarded };
  await closeSession(client);
  return result;
}

/** Ctrl-C during `while :; do cat file; done`: ms from ^C until the next prompt is parsed, and bytes xterm.js would have discarded. */
export async function measureCtrlC(url: string, file: string, floodMs = 2_000, connect: ConnectOptions = {}): Promise<{ ms: number; discarded: number; backlogBytes: number; markerMs: number }> {
  const client = await openShell(url, connect);
  client.type(`while :; do cat ${file}; done\r`);
  await new Promise((resolve) => setTimeout(resolve, floodMs));
  const backlogBytes = client.received - client.parsed;
  const prompt = client.when(PROMPT, 'parsed', 30_000);
  const started = performance.now();
  client.type('\x03');
  const ms = (await prompt) - started;
  const marker = client.when('CC_5_X', 'parsed', 30_000);
  client.type('echo CC_$((2+3))_X\r');
  const markerMs = (await marker) - started;
  const result = { ms, markerMs, discarded: client.discarded, backlogBytes };
  await closeSession(client);
  return result;
}

/** Fills a session with `lines` lines of scrollback, detaches, then reattaches `samples` times: ms from connect to `attached`. */
export async function measureReattach(url: string, file: string, lines = 1_000, samples = 5, connect: ConnectOptions = {}): Promise<{ ms: number[]; snapshotBytes: number; parseMs: number[] }> {
  const first = await openShell(url, connect);
  const filled = first.when('FILLED_7', 'parsed', 30_000);
  first.type(`head -n ${lines + 50} ${file}; echo FILLED_$((3+4))\r`);
  await filled;
  await first.quiet(200);
  const sessionId = first.sessionId;
  await first.close();
  const ms: number[] = [];
  const parseMs: number[] = [];
  let snapshotBytes = 0;
  let last: BenchTerminal | undefined;
  for (let i = 0; i < samples; i++) {
    const client = await BenchTerminal.connect(url, { ...connect, sessionId });
    ms.push(client.attachMs);
    snapshotBytes = Buffer.byteLength(client.snapshot);
    const parsedAt = performance.now();
    await new Promise<void>((resolve) => client.term!.write('', resolve));
    parseMs.push(performance.now() - parsedAt);
    if (i < samples - 1) await client.close();
    last = client;
  }
  await closeSession(last!);
  return { ms, snapshotBytes, parseMs };
}

/**
 * Fairness: `count` sessions on one server; the first floods (`while :; do cat file; done`, parsed
 * and acknowledged like a browser, in a process of its own: bench/terminal-flooder.ts) while each
 * of the others in turn types a letter, `rounds` times: the echo times of the quiet sessions. They
 * ack on receipt (no parser) to keep this client's CPU out of the measurement; opening goes in
 * batches so 100 shells do not start at once.
 */
export async function measureFairness(url: string, file: string, count = 100, rounds = 5, connect: ConnectOptions = {}): Promise<{ echo: number[]; sessions: number }> {
  const others: BenchTerminal[] = [];
  let flooder: Flooder | undefined;
  try {
    for (let opened = 1; opened < count; opened += 10) {
      const batch = Math.min(10, count - opened);
      others.push(...(await Promise.all(Array.from({ length: batch }, () => openShell(url, { ...connect, parse: false })))));
    }
    flooder = await startFlooder(url, file, connect);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const echo: number[] = [];
    const letters = 'abcdefghij';
    for (let round = 0; round < rounds; round++) {
      for (const client of others) {
        const letter = letters[round % letters.length];
        const seen = client.when(letter, 'received', 10_000);
        const sent = performance.now();
        client.type(letter);
        echo.push((await seen) - sent);
      }
    }
    await flooder.stop();
    return { echo, sessions: 1 + others.length };
  } finally {
    flooder?.kill();
    await Promise.all(others.map((client) => closeSession(client)));
  }
}

interface Flooder {
  stop(): Promise<{ received: number; discarded: number }>;
  kill(): void;
}

/** Runs bench/terminal-flooder.ts and resolves once its session floods. */
function startFlooder(url: string, file: string, connect: ConnectOptions): Promise<Flooder> {
  const child = spawn(process.execPath, [join(import.meta.dirname, 'terminal-flooder.ts'), JSON.stringify({ url, file, connect })], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const next = async (expected: string): Promise<string> => {
    const line = await lines.next();
    if (line.done || !line.value.startsWith(expected)) throw new Error(`The flooding client ${line.done ? `exited (${child.exitCode ?? child.signalCode})` : `said '${line.value}'`} instead of ${expected}.`);
    return line.value.slice(expected.length).trim();
  };
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const stop = async () => {
    child.stdin!.write('stop\n');
    return JSON.parse(await next('STOPPED')) as { received: number; discarded: number };
  };
  return next('FLOODING').then(
    () => ({ stop, kill }),
    (error: unknown) => {
      kill();
      throw error;
    },
  );
}

async function closeSession(client: BenchTerminal): Promise<void> {
  if (client.ws.readyState === WebSocket.OPEN) client.send({ type: 'close' });
  await client.close();
}
