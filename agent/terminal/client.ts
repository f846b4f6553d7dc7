import type { TerminalAttachment, TerminalFlow, TerminalSession, TerminalSink, TerminalTimers } from './session.ts';

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

  handle(session: TerminalSession): TerminalAttachment {
    const client = this;
    return {
      input: (data) => session.clientInput(client, data),
      ack: (bytes) => session.clientAck(client, bytes),
      resize: (cols, rows) => session.clientResize(client, cols, rows),
      detach: () => session.clientDetach(client),
      get unackedBytes() {
        return client.unacked;
      },
    };
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
  watchStall(timers: TerminalTimers, flow: TerminalFlow, onStall: () => void): void {
    if (this.#stallTimer !== undefined) return;
    this.#stallTimer = timers.setTimeout(onStall, flow.stallTimeoutMs);
  }

  stop(timers: TerminalTimers): void {
    if (this.#stallTimer !== undefined) timers.clearTimeout(this.#stallTimer);
    this.#stallTimer = undefined;
    this.#pending = [];
  }
}
