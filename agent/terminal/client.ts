import type { ErrorCode } from '../../protocol/errors.ts';
import type { TerminalTimers } from './timers.ts';

/** What a session tells one attached client. Calls come in protocol order: attached, then output/resized, then exit or detached. */
export interface TerminalSink {
  attached(info: { sessionId: string; cols: number; rows: number; snapshot: string; title?: string }): void;
  output(data: Uint8Array): void;
  resized(cols: number, rows: number): void;
  exit(status: { code: number; signal?: number }): void;
  /** the session dropped this client (too slow, or the session was closed before it ended) */
  detached(reason: { code: ErrorCode; message: string }): void;
}

/** One attached client: its unacknowledged byte count, its size, and output queued until its snapshot is sent. */
export class Client {
  readonly sink: TerminalSink;
  cols = 0;
  rows = 0;
  unacked = 0;
  ready = false;
  #pending: Uint8Array[] = [];
  #stallTimer: unknown;

  constructor(sink: TerminalSink) {
    this.sink = sink;
  }

  send(data: Uint8Array): void {
    this.unacked += data.byteLength;
    if (this.ready) this.sink.output(data);
    else this.#pending.push(data);
  }

  flushPending(): void {
    this.ready = true;
    const pending = this.#pending;
    this.#pending = [];
    for (const data of pending) this.sink.output(data);
  }

  acked(bytes: number, timers: TerminalTimers): void {
    // a client cannot acknowledge more than it was sent; a buggy one must not unblock the pty for the others
    this.unacked = Math.max(0, this.unacked - Math.max(0, bytes));
    // progress: if it still holds the pty paused, the session starts a full period again
    if (this.#stallTimer === undefined) return;
    timers.clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
  }

  /** Detaches it (onStall) unless it acknowledges within the stall timeout; a running watch is kept. */
  watchStall(timers: TerminalTimers, stallTimeoutMs: number, onStall: () => void): void {
    if (this.#stallTimer !== undefined) return;
    this.#stallTimer = timers.setTimeout(onStall, stallTimeoutMs);
  }

  stop(timers: TerminalTimers): void {
    if (this.#stallTimer !== undefined) timers.clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
    this.#pending = [];
  }
}
