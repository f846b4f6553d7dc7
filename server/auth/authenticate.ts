import type { IncomingHttpHeaders } from 'node:http';
import { fastifyCookie } from '@fastify/cookie';
import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import { allowedOrigins } from '../../protocol/origins.ts';
import type { Database, Role } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import { apiTokenUseIsDue, touchApiToken } from './api-tokens.ts';
import type { Authentication } from './authentication.ts';
import { cacheGeneration, cachedAuthentication, rememberAuthentication } from './principal-cache.ts';
import { hashSecret, safeEqual } from './secrets.ts';
import { SESSION_COOKIE } from './sessions.ts';

/**
 * Turns the credentials of a request (a Bearer API token or the session cookie) into a
 * Principal. Shared by the HTTP hook and by websocket endpoints that see only raw requests.
 */

export interface Credentials {
  /** the raw Authorization header */
  authorization?: string;
  /** the den_session cookie value */
  sessionCookie?: string;
}

export interface AuthStore {
  db: Kysely<Database>;
  clock: Clock;
}

/** Reads credentials from raw headers (for callers without a parsed Fastify request). */
export function credentialsFromHeaders(headers: IncomingHttpHeaders): Credentials {
  const cookies = headers.cookie ? fastifyCookie.parse(headers.cookie) : {};
  return { authorization: headers.authorization, sessionCookie: cookies[SESSION_COOKIE] };
}

/**
 * Resolves credentials; null when none were presented. Presented but bad credentials throw
 * (401 UNAUTHENTICATED / TOKEN_EXPIRED, 403 USER_SUSPENDED): a bad token must never silently
 * fall back to anonymous or to the cookie.
 */
export async function authenticate(store: AuthStore, credentials: Credentials): Promise<Authentication | null> {
  if (credentials.authorization !== undefined) {
    return authenticateToken(store, bearerToken(credentials.authorization));
  }
  if (credentials.sessionCookie) {
    return authenticateSession(store, credentials.sessionCookie);
  }
  return null;
}

/**
 * Refuses cookie-authenticated websocket upgrades from other origins (cross-site websocket
 * hijacking): browsers send cookies on cross-site upgrades and SameSite=Lax does not stop them
 * for same-site subdomains such as workspace preview URLs.
 */
export function checkUpgradeOrigin(authentication: Authentication | null, origin: string | undefined, accessUrl: string): void {
  if (!authentication?.session) return;
  const expected = new URL(accessUrl).origin;
  if (!origin || !allowedOrigins(accessUrl).some((allowed) => safeEqual(origin, allowed))) {
    throw new AppError(
      'CSRF_FAILED',
      `This websocket was opened from ${origin ? `the origin ${origin}` : 'a page without an Origin'}, not from ${expected}. Open den at ${expected} and try again.`,
    );
  }
}

/** Whether a stored CSRF token matches the X-CSRF-Token header. */
export function csrfTokenMatches(expected: string, presented: string | string[] | undefined): boolean {
  return typeof presented === 'string' && presented.length > 0 && safeEqual(presented, expected);
}

function bearerToken(header: string): string {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match) {
    throw new AppError('UNAUTHENTICATED', 'The Authorization header must be `Bearer <API token>`. Create a token with `den login` or `den tokens create`.');
  }
  return match[1];
}

async function authenticateToken(store: AuthStore, token: string): Promise<Authentication> {
  const hash = hashSecret(token);
  const now = store.clock.now();
  const cached = cachedAuthentication(hash, now.getTime());
  if (cached) {
    refuseExpiredToken(cached.expiresAt, now);
    if (apiTokenUseIsDue(cached.lastUsedAt, now)) {
      // claimed before the write, so concurrent requests with this token do not all write
      const previous = cached.lastUsedAt;
      cached.lastUsedAt = iso(now);
      await touchApiToken(store.db, store.clock, { id: cached.authentication.principal.tokenId!, last_used_at: previous });
    }
    return cached.authentication;
  }
  const generation = cacheGeneration();
  const row = await store.db
    .selectFrom('api_tokens')
    .innerJoin('users', 'users.id', 'api_tokens.user_id')
    .select([
      'api_tokens.id',
      'api_tokens.expires_at',
      'api_tokens.revoked_at',
      'api_tokens.last_used_at',
      'users.id as user_id',
      'users.username',
      'users.role',
      'users.suspended',
    ])
    .where('api_tokens.token_hash', '=', hash)
    .executeTakeFirst();
  if (!row || row.revoked_at !== null) {
    throw new AppError('UNAUTHENTICATED', 'The API token is not valid: it is unknown or was revoked. Sign in again with `den login`.');
  }
  refuseExpiredToken(row.expires_at, now);
  refuseSuspended(row);
  const lastUsedAt = await touchApiToken(store.db, store.clock, row);
  const authentication = frozen({ principal: { userId: row.user_id, username: row.username, role: row.role as Role, via: 'token', tokenId: row.id } });
  rememberAuthentication(hash, { authentication, expiresAt: row.expires_at, lastUsedAt }, now.getTime(), generation);
  return authentication;
}

async function authenticateSession(store: AuthStore, cookieValue: string): Promise<Authentication> {
  const idHash = hashSecret(cookieValue);
  const now = store.clock.now();
  const cached = cachedAuthentication(idHash, now.getTime());
  if (cached) {
    if (cached.expiresAt !== null && cached.expiresAt <= iso(now)) throw sessionEnded();
    return cached.authentication;
  }
  const generation = cacheGeneration();
  const row = await store.db
    .selectFrom('sessions')
    .innerJoin('users', 'users.id', 'sessions.user_id')
    .select(['sessions.csrf_token', 'sessions.expires_at', 'users.id as user_id', 'users.username', 'users.role', 'users.suspended'])
    .where('sessions.id_hash', '=', idHash)
    .executeTakeFirst();
  if (!row || row.expires_at <= iso(now)) throw sessionEnded();
  refuseSuspended(row);
  const authentication = frozen({
    principal: { userId: row.user_id, username: row.username, role: row.role as Role, via: 'session' },
    session: { idHash, csrfToken: row.csrf_token },
  });
  rememberAuthentication(idHash, { authentication, expiresAt: row.expires_at, lastUsedAt: null }, now.getTime(), generation);
  return authentication;
}

function refuseExpiredToken(expiresAt: string | null, now: Date): void {
  if (expiresAt !== null && expiresAt <= iso(now)) {
    throw new AppError('TOKEN_EXPIRED', `The API token expired at ${expiresAt}. Sign in again with \`den login\` to get a new one.`);
  }
}

function sessionEnded(): AppError {
  return new AppError('UNAUTHENTICATED', 'Your session has expired or was ended. Sign in again.');
}

/** Cached authentications are shared by concurrent requests, so nobody may change one in place. */
function frozen(authentication: Authentication): Authentication {
  Object.freeze(authentication.principal);
  if (authentication.session) Object.freeze(authentication.session);
  return Object.freeze(authentication);
}

function refuseSuspended(row: { username: string; suspended: number }): void {
  if (row.suspended) {
    throw new AppError('USER_SUSPENDED', `The account '${row.username}' is suspended. Ask an owner of this den server to reactivate it.`);
  }
}
