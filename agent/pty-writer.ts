import { writeSync } from 'node:fs';
import type { IPty } from 'node-pty';

/** Consecutive EAGAIN retries before the retry waits on a timer instead of the next loop turn. */
const SPIN_RETRIES = 8;
/** The longest a full pty waits between two write attempts. */
const MAX_RETRY_MS = 16;

/**
 * Writes input to a pty on the agent's main thread. node-pty's own `write` hands every chunk to
 * libuv's thread pool (`fs.write`), so a keystroke wakes a pool thread to write it and then wakes
 * the main thread again for the completion: two thread hand-offs on the echo's way, on machines
 * where the echo is a chain of wake-ups. The pty master is non-blocking, so a `writeSync` costs
 * one system call and never blocks: what the kernel does not take (EAGAIN, a short write while a
 * program is not reading its input) waits in a queue, in order, retried on the next loop turns
 * and then on a timer backing off to MAX_RETRY_MS (node's API has no "writable" event for a bare
 * fd). `done` runs once a chunk is in the pty, so the caller can grant credit for what is written
 * and hold at most its window here.
 *
 * Falls back to node-pty's `write` where its master fd is not exposed (not Linux/macOS).
 */
export class PtyWriter {
  readonly #pty: IPty;
  readonly #fd: number | undefined;
  readonly #queue: Array<{ bytes: Uint8Array; done?: () => void }> = [];
  #closed = false;
  #retries = 0;
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
    if (this.#queue.length === 1) this.#retryLater();
  }

  /** The pty is gone: drop what waits (its `done` still runs, so nothing waits on it forever). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#cancelRetry?.();
    this.#cancelRetry = undefined;
    for (const chunk of this.#queue.splice(0)) chunk.done?.();
  }

  /** Bytes the pty took now (0 when it is full); undefined when it is gone (and the writer closed). */
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

  #drain(): void {
    this.#cancelRetry = undefined;
    while (this.#queue.length > 0) {
      const head = this.#queue[0];
      const written = this.#writeNow(head.bytes);
      if (written === undefined) return;
      if (written > 0) this.#retries = 0;
      if (written < head.bytes.byteLength) {
        head.bytes = head.bytes.subarray(written);
        return this.#retryLater();
      }
      this.#queue.shift();
      head.done?.();
    }
  }

  /** The next attempt: on the next few loop turns (a paste the program reads at once), then on a timer backing off. */
  #retryLater(): void {
    this.#retries++;
    const drain = () => this.#drain();
    if (this.#retries <= SPIN_RETRIES) {
      const immediate = setImmediate(drain);
      this.#cancelRetry = () => clearImmediate(immediate);
    } else {
      const timer = setTimeout(drain, Math.min(MAX_RETRY_MS, 2 ** (this.#retries - SPIN_RETRIES)));
      this.#cancelRetry = () => clearTimeout(timer);
    }
  }
}
