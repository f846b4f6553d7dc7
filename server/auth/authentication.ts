import type { Principal } from '../http/auth-types.ts';

/**
 * What authenticating a request yields. Its own file because both the authenticator that
 * produces it and the cache that keeps it (principal-cache.ts, below the authenticator) need it.
 */
export interface Authentication {
  principal: Principal;
  /** set for cookie sessions: what logout deletes and what CSRF checks compare against */
  session?: { idHash: string; csrfToken: string };
}
