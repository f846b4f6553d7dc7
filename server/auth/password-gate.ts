import { availableParallelism } from 'node:os';
import { AppError } from '../../protocol/errors.ts';

/**
 * Bounds the password checks (scrypt, ~32 MiB and 60-250 ms of one core each) that run at once,
 * with a short queue ordered by priority. A full queue answers the least deserving attempt with
 * a quick 429 instead of letting work pile up: a spray of logins costs the server at most
 * `concurrency` cores, and a login from a clean client goes ahead of the spray's queued attempts.
 */
export interface PasswordGate {
  /**
   * Runs `check` when a place is free. Lower `priority` goes first (ties in arrival order); when
   * the queue is full the worst waiter, or this attempt if none is worse, is refused with
   * RATE_LIMITED.
   */
  run<T>(priority: number, check: () => Promise<T>): Promise<T>;
  /** checks running now */
  readonly running: number;
  /** attempts waiting for a place */
  readonly waiting: number;
  /** the most checks that have run at once */
  readonly peak: number;
}

export interface PasswordGateOptions {
  concurrency?: number;
  queueLimit?: number;
}

/**
 * One core is left to the event loop and everything else den does: on the 2-core machines den is
 * measured on, two scrypts at once made a login behind a spray wait for both.
 */
export const DEFAULT_PASSWORD_CONCURRENCY = Math.max(1, availableParallelism() - 1);
/** A waiter at the back waits at most this many checks per place; 4 keeps that under a second. */
export const PASSWORD_QUEUE_PER_PLACE = 4;

export function createPasswordGate(options: PasswordGateOptions = {}): PasswordGate {
  const concurrency = options.concurrency ?? DEFAULT_PASSWORD_CONCURRENCY;
  const queueLimit = options.queueLimit ?? concurrency * PASSWORD_QUEUE_PER_PLACE;
  const queue: Waiter[] = [];
  let running = 0;
  let peak = 0;
  let arrivals = 0;

  function start(): void {
    running++;
    peak = Math.max(peak, running);
  }

  function finish(): void {
    running--;
    const next = queue.shift();
    if (next) {
      start();
      next.admit();
    }
  }

  return {
    async run(priority, check) {
      if (running < concurrency) {
        start();
      } else {
        await new Promise<void>((admit, refuse) => {
          const waiter: Waiter = { priority, order: arrivals++, admit, refuse };
          if (queue.length >= queueLimit) {
            const worst = queue[queue.length - 1];
            if (!worst || !before(waiter, worst)) return refuse(busy());
            queue.pop();
            worst.refuse(busy());
          }
          queue.splice(insertionIndex(queue, waiter), 0, waiter);
        });
      }
      try {
        return await check();
      } finally {
        finish();
      }
    },
    get running() {
      return running;
    },
    get waiting() {
      return queue.length;
    },
    get peak() {
      return peak;
    },
  };
}

interface Waiter {
  priority: number;
  order: number;
  admit(): void;
  refuse(error: Error): void;
}

function before(a: Waiter, b: Waiter): boolean {
  return a.priority < b.priority || (a.priority === b.priority && a.order < b.order);
}

function insertionIndex(queue: Waiter[], waiter: Waiter): number {
  const index = queue.findIndex((other) => before(waiter, other));
  return index === -1 ? queue.length : index;
}

function busy(): AppError {
  return new AppError('RATE_LIMITED', 'The server is busy checking other logins. Try again in a second.', { retryAfterSeconds: 1 });
}
