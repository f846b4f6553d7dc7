import { z } from 'zod';
import type { Config } from '../config.ts';
import { parseAppHost } from './subdomain.ts';

/** den's own half of an app host's sign-in (appAuthorizeRoute), on den's origin. */
export const APP_AUTHORIZE_PATH = '/api/v1/apps/authorize';

/** A path-mode app or port of a workspace: `/@<owner>/<ws>/apps/<name>/...`, `/@<owner>/<ws>/ports/<port>/...`. */
const PATH_MODE_APP = /^\/@[^/]+\/[^/]+\/(?:apps|ports)\/[^/]+(?:\/|$)/;

/** What a browser may be sent back to after signing in to den: read as an address on den's origin. */
const returnTargetSchema = z.string().min(1).max(4096);

/**
 * Where a browser that signed in to den for an app goes next: `next` when it is den's own
 * authorize step for an app host den serves (its wildcard domain) or a path-mode app URL on den's
 * origin, as a path on den's origin; undefined for anything else (another origin, `//host`,
 * `javascript:`, a den page, a host outside the wildcard domain), so a crafted sign-in link
 * cannot send the browser anywhere den does not serve an app (no open redirect).
 */
export function appReturnTarget(next: unknown, config: Pick<Config, 'accessUrl' | 'appsWildcardDomain'>): string | undefined {
  const parsed = returnTargetSchema.safeParse(next);
  if (!parsed.success) return undefined;
  const origin = new URL(config.accessUrl).origin;
  let url: URL;
  try {
    // relative to den: `//evil`, `/\evil` and `javascript:` resolve to another origin
    url = new URL(parsed.data, origin);
  } catch {
    return undefined;
  }
  if (url.origin !== origin || url.username || url.password) return undefined;
  if (url.pathname === APP_AUTHORIZE_PATH) {
    const host = url.searchParams.get('host');
    if (!host || !parseAppHost(host, config.appsWildcardDomain)) return undefined;
    return appAuthorizePath(host, url.searchParams.get('next') ?? undefined);
  }
  return PATH_MODE_APP.test(url.pathname) ? `${url.pathname}${url.search}` : undefined;
}

/** den's sign-in page, which comes back to `next` once signed in when appReturnTarget accepts it. */
export function signInUrl(accessUrl: string, next: string): string {
  const login = new URL('/login', accessUrl);
  login.searchParams.set('next', next);
  return login.toString();
}

/** den's authorize step for `host`, returning to `next` on it (a path on that host, else `/`). */
export function appAuthorizePath(host: string, next: string | undefined): string {
  return `${APP_AUTHORIZE_PATH}?${new URLSearchParams({ host, next: localPath(next) }).toString()}`;
}

/** only a path on the same origin: never an open redirect (browsers read /\ as //) */
export function localPath(next: string | undefined): string {
  return next && /^\/(?![/\\])/.test(next) ? next : '/';
}
