import { randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { hashSecret } from '../auth/secrets.ts';
import type { Database } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';

/** The app origin's cookie: a token for this one host, never den's session. */
export const APP_COOKIE = 'den_app';

/** the code lives for one redirect: den -> app origin, a second or two */
export const APP_CODE_TTL_MS = 60_000;
/**
 * the app origin's cookie: one working day, then a new round trip through den (which checks access
 * again); signing out of den ends it sooner (deleteAppTokensOfUser). Not minutes: an app's
 * websockets and fetch calls cannot follow that round trip, so an open editor tab would break.
 */
export const APP_COOKIE_TTL_MS = 12 * 3600_000;

/**
 * A one-time code for `host` on behalf of `userId`, handed to the app origin in den's redirect
 * (docs/apps.md, subdomain mode). Stored only as a hash, like every den secret.
 */
export async function issueAppCode(db: Kysely<Database>, clock: Clock, userId: string, host: string): Promise<string> {
  return insertToken(db, clock, 'code', userId, host, APP_CODE_TTL_MS);
}

/**
 * Redeems a code at the app origin it was issued for: the code is gone afterwards (used once),
 * and a cookie token for the same user and host is issued. Undefined for an unknown, expired,
 * used or foreign code.
 */
export async function redeemAppCode(db: Kysely<Database>, clock: Clock, code: string, host: string): Promise<{ cookie: string; userId: string } | undefined> {
  const now = iso(clock.now());
  const row = await db
    .deleteFrom('app_tokens')
    .where('id_hash', '=', hashSecret(code))
    .where('kind', '=', 'code')
    .returning(['user_id', 'host', 'expires_at'])
    .executeTakeFirst();
  if (!row || row.host !== host || row.expires_at <= now) return undefined;
  return { cookie: await insertToken(db, clock, 'cookie', row.user_id, host, APP_COOKIE_TTL_MS), userId: row.user_id };
}

/** The user an app origin's cookie stands for, if it is a live cookie token of exactly that host. */
export async function appCookieUser(db: Kysely<Database>, clock: Clock, cookie: string, host: string): Promise<string | undefined> {
  const row = await db
    .selectFrom('app_tokens')
    .select(['user_id', 'host', 'expires_at'])
    .where('id_hash', '=', hashSecret(cookie))
    .where('kind', '=', 'cookie')
    .executeTakeFirst();
  return row && row.host === host && row.expires_at > iso(clock.now()) ? row.user_id : undefined;
}

/**
 * Ends every app host cookie and pending code of a user: signing out of den, a password change
 * and a suspension end them (a browser that still has a den session gets a new one silently).
 */
export async function deleteAppTokensOfUser(db: Kysely<Database>, userId: string): Promise<void> {
  await db.deleteFrom('app_tokens').where('user_id', '=', userId).execute();
}

async function insertToken(db: Kysely<Database>, clock: Clock, kind: 'code' | 'cookie', userId: string, host: string, ttlMs: number): Promise<string> {
  const token = randomBytes(32).toString('base64url');
  const now = clock.now();
  // expired tokens go as new ones come (indexed on expires_at): no sweeper needed
  await db.deleteFrom('app_tokens').where('expires_at', '<=', iso(now)).execute();
  await db
    .insertInto('app_tokens')
    .values({ id_hash: hashSecret(token), kind, user_id: userId, host, created_at: iso(now), expires_at: iso(new Date(now.getTime() + ttlMs)) })
    .execute();
  return token;
}
