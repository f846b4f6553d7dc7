import type { Authentication } from './authentication.ts';

/**
 * A short-lived, in-process cache of successful authentications, keyed by the credential's
 * sha256 (never the credential itself). Authenticating every request against the store (a hash,
 * a joined lookup, Kysely compiling it) cost as much CPU as the rest of a small read.
 *
 * Security bounds:
 *  - Every change that can end or narrow access (token revocation, logout, suspension, role
 *    change, password change, user deletion) is published on the revocation bus after it is
 *    committed (revocations.ts), and every bus drops the matching entries here before anything
 *    else hears of it, so the change applies to the next request.
 *  - A replica hears of another replica's change through a shared bus; without one, only through
 *    the store: a credential cached here then stays usable on this replica for at most
 *    CACHE_TTL_MS after another replica revoked it, suspended its user or changed their role.
 *  - Expiry (token expires_at, session expires_at) is checked on every hit, not cached.
 *  - Failures (unknown, revoked, expired, suspended) are never cached, so random tokens cannot
 *    fill the cache, and a bad credential is always refused from the store's current state.
 */

/** How long this replica may act on a cached authentication: the cross-replica staleness bound. */
export const CACHE_TTL_MS = 5_000;
const MAX_ENTRIES = 10_000;

export interface CachedAuthentication {
  authentication: Authentication;
  /** ISO time after which the credential is refused; null = never */
  expiresAt: string | null;
  /** tokens only: what the store last recorded, so last_used_at stays throttled on hits */
  lastUsedAt: string | null;
}

interface Entry extends CachedAuthentication {
  /** ms since epoch on the caller's clock when read from the store */
  readAt: number;
}

// Keys are sha256 hex digests of random 256-bit secrets, so one map can serve every store in the
// process (tests run several servers side by side) without collisions.
const entries = new Map<string, Entry>();
// Bumped on every invalidation: a lookup that started before it must not store what it read,
// since that may predate the change that caused the invalidation.
let generation = 0;

/** The cached authentication for a credential hash, if still fresh; refreshes its LRU position. */
export function cachedAuthentication(hash: string, nowMs: number): CachedAuthentication | undefined {
  const entry = entries.get(hash);
  if (!entry) return undefined;
  entries.delete(hash);
  // A clock that moved backwards (tests set clocks by hand) must not extend an entry's life.
  if (nowMs - entry.readAt >= CACHE_TTL_MS || nowMs < entry.readAt) return undefined;
  entries.set(hash, entry);
  return entry;
}

/** The generation to pass to `rememberAuthentication` for a lookup starting now. */
export function cacheGeneration(): number {
  return generation;
}

/** Stores a successful authentication read from the store, unless an invalidation happened meanwhile. */
export function rememberAuthentication(hash: string, value: CachedAuthentication, readAt: number, startedAt: number): void {
  if (startedAt !== generation) return;
  entries.delete(hash);
  if (entries.size >= MAX_ENTRIES) entries.delete(entries.keys().next().value!);
  entries.set(hash, { ...value, readAt });
}

/** Drops what a revocation ended: one session's entry on logout, every entry of the user otherwise. */
export function forgetRevoked(revocation: { userId: string; idHash?: string }): void {
  if (revocation.idHash !== undefined) forgetCredential(revocation.idHash);
  else forgetUser(revocation.userId);
}

/** Drops one cached credential (logout). */
function forgetCredential(hash: string): void {
  generation++;
  entries.delete(hash);
}

/** Drops every cached credential (a revocation may have been missed). */
export function forgetEverything(): void {
  generation++;
  entries.clear();
}

/** Drops every cached credential of a user (reached through forgetRevoked: publish a revocation instead). */
function forgetUser(userId: string): void {
  generation++;
  for (const [hash, entry] of entries) {
    if (entry.authentication.principal.userId === userId) entries.delete(hash);
  }
}
