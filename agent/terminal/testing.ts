import headless from '@xterm/headless';
import serializeAddon from '@xterm/addon-serialize';
import unicode11Addon from '@xterm/addon-unicode11';
import type { ErrorCode } from '../../protocol/errors.ts';
import type { TerminalSink } from './client.ts';
import type { TerminalAttachment } from './session.ts';
import type { TerminalTimers } from './timers.ts';

const { Terminal } = headless;
const { SerializeAddon } = serializeAddon;
const { Unicode11Addon } = unicode11Addon;

/** Waits until `check` is true, polling; fails with the timeout's name so a stuck test says what it waited for. */
export async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!check()) {
    if (performance.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}.`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * A client like the browser's: parses output with a headless xterm.js and acknowledges what was
 * parsed from the write callbacks. `ackDelayMs` makes it a slow client; `acking=false` a stuck one.
 */
export class ParsingClient implements TerminalSink {
  readonly term: InstanceType<typeof Terminal>;
  readonly serializer = new SerializeAddon();
  attachment: TerminalAttachment | undefined;
  snapshot: string | undefined;
  sessionId: string | undefined;
  received = 0;
  parsed = 0;
  text = '';
  exitStatus: { code: number; signal?: number } | undefined;
  detachedReason: { code: ErrorCode; message: string } | undefined;
  maxUnacked = 0;
  acking = true;
  ackDelayMs = 0;
  #toAck = 0;
  readonly #decoder = new TextDecoder();

  constructor(cols = 80, rows = 24, scrollback = 1000) {
    this.term = new Terminal({ cols, rows, scrollback, allowProposedApi: true });
    this.term.loadAddon(this.serializer);
    // as the browser page does (web/src/terminal.ts)
    this.term.loadAddon(new Unicode11Addon());
    this.term.unicode.activeVersion = '11';
  }

  attached(info: { sessionId: string; cols: number; rows: number; snapshot: string }): void {
    this.sessionId = info.sessionId;
    this.snapshot = info.snapshot;
    this.term.resize(info.cols, info.rows);
    this.term.write(info.snapshot);
  }

  output(data: Uint8Array): void {
    this.received += data.byteLength;
    this.text += this.#decoder.decode(data, { stream: true });
    if (this.text.length > 1 << 20) this.text = this.text.slice(-(1 << 19));
    if (this.attachment) this.maxUnacked = Math.max(this.maxUnacked, this.attachment.unackedBytes);
    this.term.write(data, () => {
      this.parsed += data.byteLength;
      this.#toAck += data.byteLength;
      if (!this.acking) return;
      const ack = () => {
        const bytes = this.#toAck;
        this.#toAck = 0;
        if (bytes > 0) this.attachment?.ack(bytes);
      };
      if (this.ackDelayMs > 0) setTimeout(ack, this.ackDelayMs);
      else ack();
    });
  }

  /** Starts acknowledging again, including what was parsed while it was not. */
  resumeAcking(): void {
    this.acking = true;
    const bytes = this.#toAck;
    this.#toAck = 0;
    if (bytes > 0) this.attachment?.ack(bytes);
  }

  resized(cols: number, rows: number): void {
    this.term.resize(cols, rows);
  }

  exit(status: { code: number; signal?: number }): void {
    this.exitStatus = status;
  }

  detached(reason: { code: ErrorCode; message: string }): void {
    this.detachedReason = reason;
  }

  /** The visible rows as text, after everything written so far is parsed. */
  screenLines(): Promise<string[]> {
    return new Promise((resolve) =>
      this.term.write('', () => {
        const buffer = this.term.buffer.active;
        const lines: string[] = [];
        for (let y = 0; y < this.term.rows; y++) lines.push(buffer.getLine(buffer.viewportY + y)?.translateToString(true) ?? '');
        resolve(lines);
      }),
    );
  }

  serialize(): Promise<string> {
    return new Promise((resolve) => this.term.write('', () => resolve(this.serializer.serialize())));
  }
}

/** A clock and timers that only move when the test says so. */
export class ManualTimers implements TerminalTimers {
  #now = 1_700_000_000_000;
  #next = 1;
  readonly #pending = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#pending.set(id, { at: this.#now + ms, fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#pending.delete(handle as number);
  }

  /** Moves the clock forward, running every timer that falls due, in order. */
  advance(ms: number): void {
    const target = this.#now + ms;
    for (;;) {
      const due = [...this.#pending.entries()].filter(([, timer]) => timer.at <= target).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.#pending.delete(due[0]);
      this.#now = due[1].at;
      due[1].fn();
    }
    this.#now = target;
  }

  get pendingCount(): number {
    return this.#pending.size;
  }
}
