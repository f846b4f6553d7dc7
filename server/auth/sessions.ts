import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import type { RevocationBus } from './revocations.ts';
import { generateCsrfToken, generateSessionId, hashSecret } from './secrets.ts';

/**
 * Browser sessions. The cookie holds a random id; the store keeps only its sha256, so a leaked
 * database does not hand out live sessions. Each session has its own CSRF token.
 */

export const SESSION_COOKIE = 'den_session';

export interface NewSession {
  /** the cookie value; never stored */
  cookieValue: string;
  csrfToken: string;
  expiresAt: Date;
}

export async function createSession(
  db: Kysely<Database>,
  clock: Clock,
  userId: string,
  ttlHours: number,
): Promise<NewSession> {
  const cookieValue = generateSessionId();
  const csrfToken = generateCsrfToken();
  const now = clock.now();
  const expiresAt = new Date(now.getTime() + ttlHours * 3600_000);
  await db
    .insertInto('sessions')
    .values({
      id_hash: hashSecret(cookieValue),
      user_id: userId,
      csrf_token: csrfToken,
      created_at: iso(now),
      expires_at: iso(expiresAt),
    })
    .execute();
  return { cookieValue, csrfToken, expiresAt };
}

/** Ends one session (logout) and announces it, which ends what the session holds open. */
export async function deleteSession(db: Kysely<Database>, revocations: RevocationBus, session: { userId: string; idHash: string }): Promise<void> {
  await db.deleteFrom('sessions').where('id_hash', '=', session.idHash).execute();
  revocations.publish({ kind: 'session', userId: session.userId, idHash: session.idHash });
}

/**
 * Ends every session of a user (suspension, password change), usually inside the caller's
 * transaction: the caller announces the revocation once that is committed.
 */
export async function deleteSessionsOfUser(db: Kysely<Database>, userId: string): Promise<void> {
  await db.deleteFrom('sessions').where('user_id', '=', userId).execute();
}

/** Removes expired sessions; cheap enough to call on login. */
export async function deleteExpiredSessions(db: Kysely<Database>, clock: Clock): Promise<void> {
  await db.deleteFrom('sessions').where('expires_at', '<=', iso(clock.now())).execute();
}
