/**
 * Where the login limits keep their counts: in memory for one process (SQLite), in PostgreSQL
 * for replicas that share a database (login-limit-store.ts; the same two operations, each atomic
 * in one statement), without the policy in login-limits.ts changing.
 *
 * Times are milliseconds since the epoch, passed in by the caller, so replicas that share the
 * state agree on windows and tests can move time by hand.
 */
export interface LoginLimitState {
  /**
   * Adds `delta` (may be 0 or negative) to the counter `key` and returns it. A counter lives in a
   * fixed window of `windowMs` that opens at its first add; after the window it starts from zero.
   */
  add(key: string, delta: number, windowMs: number, now: number): Promise<WindowCount>;
  /**
   * Paces attempts under `key`: reserves the next free start time, `spacingMs` after the previous
   * reservation, unless the caller would have to wait more than `maxWaitMs` for it (then nothing
   * is reserved and `waitMs` says how long until one could be).
   */
  reserveSlot(key: string, spacingMs: number, maxWaitMs: number, now: number): Promise<SlotReservation>;
}

export interface WindowCount {
  count: number;
  /** when this window ends and the count starts from zero again */
  resetsAt: number;
}

export interface SlotReservation {
  reserved: boolean;
  /** how long the caller waits for its slot (reserved), or until a slot could be had (not reserved) */
  waitMs: number;
}

/**
 * Keys the in-memory state holds at most. Every key costs an entry, and keys come from client
 * input (usernames, addresses), so past this the oldest entries go: an attacker who floods it
 * can reset counters, but needs this many fresh addresses or verified usernames to do so.
 */
const MAX_IN_MEMORY_KEYS = 100_000;

/** The login limit state of one process. */
export function createInMemoryLoginLimitState(maxKeys = MAX_IN_MEMORY_KEYS): LoginLimitState {
  // Map iteration follows insertion order; entries are re-inserted when they change, so the
  // first entries are the least recently changed ones and are evicted first.
  const counters = new Map<string, { count: number; resetsAt: number }>();
  const slots = new Map<string, number>();

  // At the cap: drop what has expired, then the oldest tenth, so a flood pays one sweep per
  // maxKeys / 10 new keys rather than one per key.
  function bound<V>(map: Map<string, V>, isExpired: (value: V) => boolean): void {
    if (map.size < maxKeys) return;
    for (const [key, value] of map) {
      if (isExpired(value)) map.delete(key);
    }
    const keep = Math.floor(maxKeys * 0.9);
    for (const key of map.keys()) {
      if (map.size <= keep) break;
      map.delete(key);
    }
  }

  return {
    async add(key, delta, windowMs, now) {
      const current = counters.get(key);
      const live = current && current.resetsAt > now ? current : { count: 0, resetsAt: now + windowMs };
      if (delta === 0) return { ...live };
      counters.delete(key);
      bound(counters, (entry) => entry.resetsAt <= now);
      const next = { count: Math.max(0, live.count + delta), resetsAt: live.resetsAt };
      counters.set(key, next);
      return { ...next };
    },

    async reserveSlot(key, spacingMs, maxWaitMs, now) {
      const start = Math.max(now, slots.get(key) ?? now);
      const waitMs = start - now;
      if (waitMs > maxWaitMs) return { reserved: false, waitMs: waitMs - maxWaitMs };
      slots.delete(key);
      if (start + spacingMs > now) {
        bound(slots, (next) => next <= now);
        slots.set(key, start + spacingMs);
      }
      return { reserved: true, waitMs };
    },
  };
}
