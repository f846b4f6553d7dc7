import type { Kysely } from 'kysely';
import type { Database } from './schema.ts';
import { iso } from './time.ts';

/**
 * Takes or renews the lease `name` for `owner` until `now + ttlMs`: true when `owner` holds it
 * afterwards. A lease held by another owner is taken over only once it has expired, so of the
 * replicas of one deployment exactly one runs the job at a time (on SQLite and PostgreSQL: the
 * row is created once with ON CONFLICT DO NOTHING, then taken with one conditional UPDATE).
 */
export async function holdLease(db: Kysely<Database>, name: string, owner: string, now: Date, ttlMs: number): Promise<boolean> {
  const until = iso(new Date(now.getTime() + ttlMs));
  await db.insertInto('leases').values({ name, owner, expires_at: iso(now) })
    .onConflict((conflict) => conflict.column('name').doNothing()).execute();
  const result = await db.updateTable('leases').set({ owner, expires_at: until })
    .where('name', '=', name)
    .where((eb) => eb.or([eb('owner', '=', owner), eb('expires_at', '<=', iso(now))]))
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Gives the lease up at once (graceful shutdown), so another replica need not wait for it to expire. */
export async function releaseLease(db: Kysely<Database>, name: string, owner: string, now: Date): Promise<void> {
  await db.updateTable('leases').set({ expires_at: iso(now) }).where('name', '=', name).where('owner', '=', owner).execute();
}
