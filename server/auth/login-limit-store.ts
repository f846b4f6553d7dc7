import { sql, type Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import type { LoginLimitState } from './login-limit-state.ts';

/**
 * The login limit state in PostgreSQL, shared by every replica on the database: a guesser meets
 * the same counts and pacing whichever replica answers. Each operation is one statement
 * (INSERT ... ON CONFLICT DO UPDATE ... RETURNING), so concurrent attempts on several replicas
 * count exactly as they would in one process. `namespace` keeps two states apart in the same
 * tables (the failure counts and the known addresses). Rows past their window are deleted now and
 * then by the operations themselves, so the tables hold about the keys of the last window.
 * PostgreSQL only (GREATEST); SQLite has one process and keeps the state in memory.
 */
export function createStoreLoginLimitState(db: Kysely<Database>, namespace: string): LoginLimitState {
  let operations = 0;
  const prefixed = (key: string) => `${namespace}:${key}`;

  /** One operation in PRUNE_EVERY removes what has expired, in the background. */
  const maybePrune = (now: number) => {
    if (++operations % PRUNE_EVERY !== 0) return;
    void Promise.all([
      db.deleteFrom('login_counters').where('resets_at', '<=', now).execute(),
      db.deleteFrom('login_slots').where('next_at', '<=', now).execute(),
    ]).catch(() => undefined);
  };

  return {
    async add(key, delta, windowMs, now) {
      maybePrune(now);
      const k = prefixed(key);
      if (delta === 0) {
        const row = await db.selectFrom('login_counters').select(['count', 'resets_at']).where('key', '=', k).where('resets_at', '>', now).executeTakeFirst();
        return row ? { count: Number(row.count), resetsAt: Number(row.resets_at) } : { count: 0, resetsAt: now + windowMs };
      }
      const { rows } = await sql<{ count: string; resets_at: string }>`
        insert into login_counters (key, count, resets_at) values (${k}, greatest(0, ${delta}::bigint), ${now + windowMs}::bigint)
        on conflict (key) do update set
          count = case when login_counters.resets_at > ${now}::bigint then greatest(0, login_counters.count + ${delta}::bigint) else greatest(0, ${delta}::bigint) end,
          resets_at = case when login_counters.resets_at > ${now}::bigint then login_counters.resets_at else ${now + windowMs}::bigint end
        returning count, resets_at`.execute(db);
      return { count: Number(rows[0].count), resetsAt: Number(rows[0].resets_at) };
    },

    async reserveSlot(key, spacingMs, maxWaitMs, now) {
      maybePrune(now);
      const k = prefixed(key);
      const { rows } = await sql<{ next_at: string }>`
        insert into login_slots (key, next_at) values (${k}, ${now + spacingMs}::bigint)
        on conflict (key) do update set next_at = greatest(login_slots.next_at, ${now}::bigint) + ${spacingMs}::bigint
          where greatest(login_slots.next_at, ${now}::bigint) - ${now}::bigint <= ${maxWaitMs}::bigint
        returning next_at`.execute(db);
      if (rows.length > 0) return { reserved: true, waitMs: Number(rows[0].next_at) - spacingMs - now };
      const held = await db.selectFrom('login_slots').select('next_at').where('key', '=', k).executeTakeFirst();
      const waitMs = Math.max(now, Number(held?.next_at ?? now)) - now;
      return { reserved: false, waitMs: Math.max(0, waitMs - maxWaitMs) };
    },
  };
}

/** How often (in operations) expired rows are removed: rare enough to cost nothing per login. */
const PRUNE_EVERY = 256;
