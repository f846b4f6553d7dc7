import { ACK_EVERY_BYTES } from './terminal.ts';

/** How long a remainder below ACK_EVERY_BYTES waits, once output has gone quiet, before it is acknowledged on its own. */
export const ACK_QUIET_DELAY_MS = 250;

export interface AckTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}
const globalTimers: AckTimers = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as Parameters<typeof globalThis.clearTimeout>[0]),
};

/**
 * When a terminal client acknowledges OUTPUT bytes (the flow control of protocol/terminal.ts).
 * The dashboard, the CLI and the benchmark client share it, so they behave the same:
 * - every ACK_EVERY_BYTES consumed (parsed by xterm.js, written to the local terminal): at once,
 *   so a flood keeps flowing;
 * - a smaller remainder, once everything received is consumed: ACK_QUIET_DELAY_MS later, together
 *   with whatever was consumed meanwhile. An echoed keystroke then costs no ack of its own (it
 *   cost a message on every hop to the agent). Waiting never holds the shell up: the session
 *   pauses the pty only at its high watermark and resumes at its low one, both far above
 *   ACK_EVERY_BYTES.
 */
export class OutputAcks {
  readonly #send: (bytes: number) => void;
  readonly #timers: AckTimers;
  /** bytes received and not consumed yet */
  #unconsumed = 0;
  /** bytes consumed and not acknowledged yet */
  #unsent = 0;
  #timer: unknown;
  #stopped = false;

  constructor(send: (bytes: number) => void, timers: AckTimers = globalTimers) {
    this.#send = send;
    this.#timers = timers;
  }

  /** OUTPUT bytes arrived (they count as consumed once `consumed` says so). */
  received(bytes: number): void {
    this.#unconsumed += bytes;
  }

  consumed(bytes: number): void {
    if (this.#stopped) return;
    this.#unconsumed -= bytes;
    this.#unsent += bytes;
    if (this.#unsent >= ACK_EVERY_BYTES) return this.#flush();
    if (this.#unconsumed <= 0 && this.#timer === undefined) {
      this.#timer = this.#timers.setTimeout(() => {
        this.#timer = undefined;
        this.#flush();
      }, ACK_QUIET_DELAY_MS);
    }
  }

  /** A new attachment: its counts start at zero (what the previous one left is void there). */
  reset(): void {
    this.#cancelTimer();
    this.#unconsumed = 0;
    this.#unsent = 0;
  }

  /** The connection is gone: nothing more is sent. */
  stop(): void {
    this.reset();
    this.#stopped = true;
  }

  #flush(): void {
    this.#cancelTimer();
    if (this.#unsent === 0 || this.#stopped) return;
    const bytes = this.#unsent;
    this.#unsent = 0;
    this.#send(bytes);
  }

  #cancelTimer(): void {
    if (this.#timer === undefined) return;
    this.#timers.clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
