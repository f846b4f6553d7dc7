import { write, writeSync } from 'node:fs';
import type { IPty } from 'node-pty';

/**
 * How long a full pty is retried on every loop turn (as node-pty does) before the retries wait on
 * a timer: a program that reads its input takes more within this, one that does not (input
 * pasted into `sleep`) must not keep the agent's CPU busy.
 */
const SPIN_MS = 50;
/** The longest a full pty waits between two write attempts after SPIN_MS without progress. */
const MAX_RETRY_MS = 16;

/**
 * Writes input to a pty on the agent's main thread. node-pty's own `write` hands every chunk to
 * libuv's thread pool (`fs.write`), so a keystroke wakes a pool thread to write it and then wakes
 * the main thread again for the completion: two thread hand-offs on the echo's way, on machines
 * where the echo is a chain of wake-ups. The pty master is non-blocking, so a `writeSync` costs
 * one system call and never blocks. What the kernel does not take (EAGAIN, a short write while a
 * program is not reading its input: a paste) waits in a queue, in order, and is written as
 * node-pty writes, through the thread pool, retried on the next loop turn while the pty keeps
 * taking bytes and then on a timer backing off to MAX_RETRY_MS (Node has no "writable" event for
 * a bare fd). `done` runs once a chunk is in the pty, so the caller can grant credit for what is
 * written and hold at most its window here.
 *
 * Falls back to node-pty's `write` where its master fd is not exposed (not Linux/macOS).
 */
export class PtyWriter {
  readonly #pty: IPty;
  readonly #fd: number | undefined;
  readonly #queue: Array<{ bytes: Uint8Array; done?: () => void }> = [];
  #closed = false;
  /** when the current wait began or the pty last took bytes during it (performance.now()): the retries' pace */
  #progressAt = 0;
  #backoffMs = 0;
  #cancelRetry: (() => void) | undefined;

  constructor(pty: IPty) {
    this.#pty = pty;
    // UnixTerminal's `fd` (the master) and its 'close' (the fd is closed or about to be) are not in
    // node-pty's typings; 'close' comes before the exit event, after which the fd may be reused
    const runtime = pty as IPty & { fd?: unknown; on?: (event: 'close', listener: () => void) => void };
    this.#fd = typeof runtime.fd === 'number' && typeof runtime.on === 'function' ? runtime.fd : undefined;
    if (this.#fd !== undefined) runtime.on!('close', () => this.close());
  }

  /** Bytes waiting for the pty to take them. */
  get queuedBytes(): number {
    let bytes = 0;
    for (const chunk of this.#queue) bytes += chunk.bytes.byteLength;
    return bytes;
  }

  write(bytes: Uint8Array, done?: () => void): void {
    if (this.#closed || bytes.byteLength === 0) return done?.();
    if (this.#fd === undefined) {
      // node-pty copies the bytes into its own queue
      this.#pty.write(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      return done?.();
    }
    let rest = bytes;
    if (this.#queue.length === 0) {
      const written = this.#writeNow(rest);
      if (written === rest.byteLength) return done?.();
      // the pty is gone: close() dropped the queue; this chunk is dropped the same way
      if (written === undefined) return done?.();
      rest = rest.subarray(written);
    }
    // the caller may reuse its buffer once we return: what waits is a copy
    this.#queue.push({ bytes: Uint8Array.from(rest), done });
    if (this.#queue.length === 1) {
      // a new wait: retried on every loop turn for SPIN_MS from now
      this.#progressAt = performance.now();
      this.#retryLater();
    }
  }

  /** The pty is gone: drop what waits (its `done` still runs, so nothing waits on it forever). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#cancelRetry?.();
    this.#cancelRetry = undefined;
    for (const chunk of this.#queue.splice(0)) chunk.done?.();
  }

  /** Bytes the pty took now, on this thread (0 when it is full); undefined when it is gone (and the writer closed). */
  #writeNow(bytes: Uint8Array): number | undefined {
    try {
      return writeSync(this.#fd!, bytes, 0, bytes.byteLength);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EAGAIN') return 0;
      // EIO/EBADF: the program and its pty are gone; the exit event follows
      this.close();
      return undefined;
    }
  }

  /**
   * Writes the head of the queue as node-pty does, through the thread pool: while a program
   * takes a paste bit by bit, each attempt leaves the core to it, where retrying on the main
   * thread would take the core from it (measured: half the paste throughput on a loaded machine).
   */
  #drain(): void {
    this.#cancelRetry = undefined;
    const head = this.#queue[0];
    if (!head || this.#closed) return;
    write(this.#fd!, head.bytes, 0, head.bytes.byteLength, null, (error, written) => {
      if (this.#closed) return;
      if (error) {
        if (error.code === 'EAGAIN') return this.#retryLater();
        // EIO/EBADF: the program and its pty are gone; the exit event follows
        return this.close();
      }
      if (written > 0) this.#progressAt = performance.now();
      if (written < head.bytes.byteLength) head.bytes = head.bytes.subarray(written);
      else {
        this.#queue.shift();
        head.done?.();
      }
      this.#drain();
    });
  }

  /** The next attempt: on the next loop turn while the pty took bytes lately, then on a timer backing off. */
  #retryLater(): void {
    const drain = () => this.#drain();
    if (performance.now() - this.#progressAt < SPIN_MS) {
      this.#backoffMs = 0;
      const immediate = setImmediate(drain);
      this.#cancelRetry = () => clearImmediate(immediate);
    } else {
      this.#backoffMs = Math.min(MAX_RETRY_MS, Math.max(1, this.#backoffMs * 2));
      const timer = setTimeout(drain, this.#backoffMs);
      this.#cancelRetry = () => clearTimeout(timer);
    }
  }
}
