import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';
import { AppError } from '../../protocol/errors.ts';
import type { AuthLevel, Principal } from '../http/auth-types.ts';
import type { Role } from '../store/schema.ts';
import { authenticate, checkUpgradeOrigin, credentialsFromHeaders, csrfTokenMatches } from './authenticate.ts';
import type { Authentication } from './authentication.ts';
import type { DenBase } from '../base.ts';
import type { LiveAccess, TrackedWorkspace } from './live-access.ts';
import { SESSION_COOKIE } from './sessions.ts';

/** A route as the auth plugin saw it at registration (the authorization matrix enumerates these). */
export interface RegisteredRoute {
  method: string;
  url: string;
  auth: AuthLevel;
  websocket: boolean;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** every route registered after the auth plugin, with its declared auth level */
    registeredRoutes: readonly RegisteredRoute[];
  }
}

/** What authentication reads: the store and clock for credentials, the access URL for origin checks, live access for marks. */
export interface AuthDeps extends Pick<DenBase, 'store' | 'clock' | 'config'> {
  liveAccess: LiveAccess;
}

export const AUTH_LEVELS: readonly AuthLevel[] = ['public', 'user', 'template-admin', 'owner'];

/** @fastify/swagger-ui registers its own routes (UI, static files, the OpenAPI JSON/YAML) here. */
export const DOCS_PREFIX = '/api/docs';

/**
 * App-wide authentication and authorization:
 *  - refuses at start-up to register a route without `config.auth`;
 *  - sets `request.principal` from `Authorization: Bearer <token>` or the den_session cookie;
 *  - enforces the route's level (401 / 403), refuses suspended users;
 *  - requires the session's CSRF token on cookie-authenticated writes, and the access URL's
 *    Origin on cookie-authenticated websocket upgrades.
 * Register it before any route so its onRoute hook sees them all.
 */
export const authPlugin = fp(
  async (app: FastifyInstance, deps: AuthDeps) => {
    const routes: RegisteredRoute[] = [];
    app.decorate('registeredRoutes', routes);
    app.decorateRequest('principal', null);

    app.addHook('onRoute', (route) => {
      if (isDocsRoute(route)) {
        // The docs UI and the OpenAPI document describe only what is public anyway.
        route.config = { ...route.config, auth: 'public' };
      }
      const auth = route.config?.auth;
      if (auth === 'public' && route.schema && !route.schema.hide) {
        // so the OpenAPI document does not ask for credentials on public routes
        route.schema = { ...route.schema, security: [] } as typeof route.schema;
      }
      for (const method of [route.method].flat()) {
        if (!auth || !AUTH_LEVELS.includes(auth)) {
          throw new Error(
            `Route ${method} ${route.url} declares no valid config.auth. Add config: { auth: 'public' | 'user' | 'template-admin' | 'owner' } to it.`,
          );
        }
        routes.push({ method, url: route.url, auth, websocket: Boolean((route as { websocket?: boolean }).websocket) });
      }
    });

    app.addHook('onRequest', async (request) => {
      const level = request.routeOptions.config?.auth;
      // No route matched (the 404 handler) or a public route: nothing to check here. Public
      // routes that care who calls (agent connect, app proxy) call resolvePrincipal themselves.
      if (!request.routeOptions.url || level === 'public') return;
      if (!level) throw new AppError('INTERNAL', 'This route declares no access level. This is a bug in den; please report it.');
      const since = deps.liveAccess.mark();
      const authentication = await authenticate({ db: deps.store.db, clock: deps.clock }, credentialsOf(request));
      if (!authentication) {
        throw new AppError('UNAUTHENTICATED', 'You are not signed in. Sign in (or run `den login`) and try again.');
      }
      authentications.set(request, authentication);
      marks.set(request, { since, liveAccess: deps.liveAccess });
      request.principal = authentication.principal;
      if (authentication.session) checkCookieRequest(request, authentication, deps.config.accessUrl);
      requireLevel(authentication.principal, level);
    });
  },
  { name: 'den-auth', dependencies: ['@fastify/cookie'] },
);

/** Throws 403 FORBIDDEN unless the principal has one of `roles`. For checks inside handlers. */
export function requireRole(principal: Principal, ...roles: Role[]): void {
  if (!roles.includes(principal.role)) {
    throw new AppError(
      'FORBIDDEN',
      `This needs the ${roles.join(' or ')} role; you are signed in as '${principal.username}' (${principal.role}). Ask an owner of this den server for access.`,
    );
  }
}

/** Throws 403 FORBIDDEN unless the principal meets an AuthLevel. */
export function requireLevel(principal: Principal, level: AuthLevel): void {
  if (level === 'template-admin') requireRole(principal, 'owner', 'template-admin');
  else if (level === 'owner') requireRole(principal, 'owner');
}

/**
 * Resolves who sent a request without enforcing anything: null for anonymous, throws for bad
 * credentials. For public routes that authorize by themselves (websockets, app proxy). A
 * cookie-authenticated websocket upgrade is also checked against the access URL's origin.
 */
export async function resolvePrincipal(deps: AuthDeps, request: FastifyRequest): Promise<Principal | null> {
  const known = authentications.get(request);
  if (known) return known.principal;
  const since = deps.liveAccess.mark();
  const authentication = await authenticate({ db: deps.store.db, clock: deps.clock }, credentialsOf(request));
  if (!authentication) return null;
  authentications.set(request, authentication);
  marks.set(request, { since, liveAccess: deps.liveAccess });
  if (isUpgrade(request.headers)) checkUpgradeOrigin(authentication, request.headers.origin, deps.config.accessUrl);
  return authentication.principal;
}

/**
 * The same for a raw Node request (an `upgrade` event outside Fastify's routing, the SSH
 * gateway's websocket tunnel): null for anonymous, throws for bad credentials or, on a cookie
 * upgrade, a foreign Origin. A caller that keeps the connection open takes `den.liveAccess.mark()`
 * before this and registers the connection with `den.liveAccess.track`, so a revocation ends it.
 */
export async function resolvePrincipalFromRaw(deps: Omit<AuthDeps, 'liveAccess'>, raw: IncomingMessage): Promise<Principal | null> {
  const authentication = await authenticate({ db: deps.store.db, clock: deps.clock }, credentialsFromHeaders(raw.headers));
  if (authentication && isUpgrade(raw.headers)) checkUpgradeOrigin(authentication, raw.headers.origin, deps.config.accessUrl);
  return authentication?.principal ?? null;
}

/** The CSRF token of a cookie-authenticated request (returned by GET /users/me); undefined for tokens. */
export function csrfTokenOf(request: FastifyRequest): string | undefined {
  return authentications.get(request)?.session?.csrfToken;
}

/** The session of a cookie-authenticated request (logout deletes it). */
export function sessionOf(request: FastifyRequest): { idHash: string; csrfToken: string } | undefined {
  return authentications.get(request)?.session;
}

/**
 * Keeps a websocket or streamed response of an authenticated request open only as long as the
 * access that opened it: `end` runs with a coded error when the user is suspended or deleted,
 * the request's token is revoked, its session logged out or ended by a password change, or a
 * role change takes the workspace out of reach. Call the returned function when it closes.
 */
export function trackLiveAccess(
  request: FastifyRequest,
  workspace: TrackedWorkspace,
  end: (error: AppError) => void,
): () => void {
  const authentication = authentications.get(request);
  const mark = marks.get(request);
  if (!authentication || mark === undefined) throw new Error('trackLiveAccess called on a request without authentication');
  const { principal, session } = authentication;
  const { since, liveAccess } = mark;
  return liveAccess.track(
    {
      userId: principal.userId,
      ...(principal.tokenId ? { tokenId: principal.tokenId } : {}),
      ...(session ? { sessionIdHash: session.idHash } : {}),
      workspace,
      since,
    },
    end,
  );
}

// Per-request authentication details that are not part of the public Principal type.
const authentications = new WeakMap<FastifyRequest, Authentication>();
// The live-access mark taken before each request was authenticated, and the registry it was
// taken from (see trackLiveAccess).
const marks = new WeakMap<FastifyRequest, { since: number; liveAccess: LiveAccess }>();

const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

function checkCookieRequest(request: FastifyRequest, authentication: Authentication, accessUrl: string): void {
  if (isUpgrade(request.headers)) {
    checkUpgradeOrigin(authentication, request.headers.origin, accessUrl);
    return;
  }
  if (!WRITE_METHODS.has(request.method)) return;
  if (!csrfTokenMatches(authentication.session!.csrfToken, request.headers['x-csrf-token'])) {
    throw new AppError(
      'CSRF_FAILED',
      'This change was sent with the session cookie but without the matching X-CSRF-Token header. Reload the page and try again.',
    );
  }
}

function credentialsOf(request: FastifyRequest) {
  const cookie = request.cookies?.[SESSION_COOKIE];
  if (request.cookies) return { authorization: request.headers.authorization, sessionCookie: cookie };
  return credentialsFromHeaders(request.headers);
}

function isUpgrade(headers: IncomingMessage['headers']): boolean {
  return String(headers.upgrade ?? '').toLowerCase() === 'websocket';
}

function isDocsRoute(route: RouteOptions & { prefix?: string }): boolean {
  const inDocs = (path: string | undefined) => path === DOCS_PREFIX || Boolean(path?.startsWith(`${DOCS_PREFIX}/`));
  // Only routes registered inside a plugin mounted under the docs prefix: a domain route cannot
  // become public by choosing a URL that starts with /api/docs.
  return inDocs(route.prefix) && inDocs(route.url);
}
