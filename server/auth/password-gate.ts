import { availableParallelism } from 'node:os';
import { AppError } from '../../protocol/errors.ts';

/**
 * Bounds the password checks (scrypt, ~32 MiB and 60-250 ms of one core each) that run at once,
 * with a short queue ordered by priority. A full queue answers the least deserving attempt with
 * a quick 429 instead of letting work pile up: a spray of logins costs the server at most
 * `concurrency` cores, and a login from a clean client goes ahead of the spray's queued attempts.
 * Priority 0 (a login from an address that signed in to the account before) may also use
 * `reserved` places of its own, so a spray never holds it up at all.
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
  reserved?: number;
  queueLimit?: number;
}

/**
 * One core is left to the event loop and everything else den does, and to the reserved place:
 * on the 2-core machines den is measured on, a known user's login behind a spray then costs one
 * scrypt, not the spray's scrypt and then its own.
 */
export const DEFAULT_PASSWORD_CONCURRENCY = Math.max(1, availableParallelism() - 1);
export const DEFAULT_RESERVED_PLACES = 1;
/** A waiter at the back waits at most this many checks per place; 4 keeps that under a second. */
export const PASSWORD_QUEUE_PER_PLACE = 4;

export function createPasswordGate(options: PasswordGateOptions = {}): PasswordGate {
  const concurrency = options.concurrency ?? DEFAULT_PASSWORD_CONCURRENCY;
  const reservedPlaces = options.reserved ?? DEFAULT_RESERVED_PLACES;
  const queueLimit = options.queueLimit ?? concurrency * PASSWORD_QUEUE_PER_PLACE;
  const queue: Waiter[] = [];
  const running = { general: 0, reserved: 0 };
  let peak = 0;
  let arrivals = 0;

  /** Takes a place for `priority` if one is free. */
  function take(priority: number): Place | undefined {
    // While a reserved check runs no other check starts: two scrypts at once each took 1.0-1.5x
    // as long on den's 2-core test machines (up to 3x inside a loaded server), and the reserved
    // one is the login somebody is waiting for.
    const place: Place | undefined = running.general < concurrency && (priority === 0 || running.reserved === 0) ? 'general'
      : priority === 0 && running.reserved < reservedPlaces ? 'reserved'
      : undefined;
    if (place) {
      running[place]++;
      peak = Math.max(peak, running.general + running.reserved);
    }
    return place;
  }

  function release(place: Place): void {
    running[place]--;
    // the queue is in priority order: once its head cannot have a place, nobody behind it can
    while (queue.length > 0) {
      const next = take(queue[0].priority);
      if (!next) break;
      queue.shift()!.admit(next);
    }
  }

  return {
    async run(priority, check) {
      const place = take(priority) ?? await new Promise<Place>((admit, refuse) => {
        const waiter: Waiter = { priority, order: arrivals++, admit, refuse };
        if (queue.length >= queueLimit) {
          const worst = queue[queue.length - 1];
          if (!worst || !before(waiter, worst)) return refuse(busy());
          queue.pop();
          worst.refuse(busy());
        }
        queue.splice(insertionIndex(queue, waiter), 0, waiter);
      });
      try {
        return await check();
      } finally {
        release(place);
      }
    },
    get running() {
      return running.general + running.reserved;
    },
    get waiting() {
      return queue.length;
    },
    get peak() {
      return peak;
    },
  };
}

/** Whether `error` is the gate's refusal (not one thrown by the check it ran). */
export function isGateRefusal(error: unknown): error is AppError {
  return error instanceof GateRefusal;
}

type Place = 'general' | 'reserved';

interface Waiter {
  priority: number;
  order: number;
  admit(place: Place): void;
  refuse(error: Error): void;
}

function before(a: Waiter, b: Waiter): boolean {
  return a.priority < b.priority || (a.priority === b.priority && a.order < b.order);
}

function insertionIndex(queue: Waiter[], waiter: Waiter): number {
  const index = queue.findIndex((other) => before(waiter, other));
  return index === -1 ? queue.length : index;
}

class GateRefusal extends AppError {}

function busy(): AppError {
  return new GateRefusal('RATE_LIMITED', 'The server is busy checking other logins. Try again in a second.', { retryAfterSeconds: 1 });
}
