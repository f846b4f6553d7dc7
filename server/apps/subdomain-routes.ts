import type { IncomingMessage } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../protocol/errors.ts';
import { resolvePrincipal } from '../auth/plugin.ts';
import { SESSION_COOKIE } from '../auth/sessions.ts';
import { canAccessWorkspace, trackedWorkspace, type WorkspaceRow } from '../workspaces/access.ts';
import type { ShareLevel } from '../../protocol/template-fields.ts';
import type { Role } from '../store/schema.ts';
import { effectiveShare } from './shares.ts';
import { APP_COOKIE, appCookieUser, issueAppCode, redeemAppCode, APP_COOKIE_TTL_MS } from './app-tokens.ts';
import { appTarget } from './apps.ts';
import { appResponseTimeoutMs, checkHostHeader, forwardThroughAgent, registerProxyRoute, type AppProxyOptions } from './proxy.ts';
import { answerPreflight, ownAppOrigin, refuseOtherOwnersApp } from './cors.ts';
import { parseAppHost, type AppHost } from './subdomain.ts';
import { appAuthorizePath, localPath, signInUrl } from './return-target.ts';

/** Requests to an app host are routed under this prefix (rewriteAppHostUrl); never a path of den's own. */
export const APP_HOST_PREFIX = '/.den-app';
/** The one path den keeps for itself on an app host: where den's redirect hands over the code. */
export const APP_AUTH_PATH = '/.den/auth';

/**
 * Fastify's rewriteUrl: a request whose Host is an app host of `--apps-wildcard-domain`
 * (`8080--dev--alice.apps.example.com`) goes to the app whatever its path, so it is routed
 * under APP_HOST_PREFIX before den's own routes could match it. Every other request is untouched.
 */
export function rewriteAppHostUrl(domain: string | undefined): (request: IncomingMessage) => string {
  return (request) => {
    const url = request.url ?? '/';
    return parseAppHost(request.headers.host, domain) ? `${APP_HOST_PREFIX}${url.startsWith('/') ? url : `/${url}`}` : url;
  };
}

/**
 * Subdomain mode (docs/apps.md): each app and port its own browser origin
 * `<app|port>--<ws>--<owner>.<domain>`, on which den's session cookie does not exist.
 *  - A request there without the origin's cookie is sent (GET) to den's
 *    `/api/v1/apps/authorize`, where the den session is; den checks who may open the app and
 *    redirects back to APP_AUTH_PATH with a one-time code, which the app host exchanges for its
 *    cookie (scoped to that host, APP_COOKIE_TTL_MS) before sending the browser on.
 *  - With the cookie, the request goes to the app unchanged (no prefix), the cookie taken out.
 */
export async function subdomainRoutes(app: FastifyInstance, deps: AppProxyOptions): Promise<void> {
  const domain = deps.config.appsWildcardDomain;
  const timeoutMs = appResponseTimeoutMs(deps);
  const accessUrl = new URL(deps.config.accessUrl);
  const secure = accessUrl.protocol === 'https:';

  registerProxyRoute(app, APP_HOST_PREFIX, async (request, reply) => {
    checkHostHeader(request.headers.host);
    const appHost = parseAppHost(request.headers.host, domain);
    // den's own host asking for the internal prefix: there is nothing here
    if (!appHost) throw new AppError('NOT_FOUND', 'There is no such page on this den server.');
    const url = (request.raw as IncomingMessage & { originalUrl?: string }).originalUrl ?? request.raw.url ?? '/';
    const path = url.startsWith('/') ? url : `/${url}`;
    if (path === APP_AUTH_PATH || path.startsWith(`${APP_AUTH_PATH}?`)) return exchangeCode(request, reply, appHost);
    if (answerPreflight(request, reply, appHost, domain)) return;

    const since = deps.liveAccess.mark();
    const shared = await sharedWorkspace(deps, appHost);
    if (shared?.level === 'public') {
      return forwardTo(request, reply, appHost, shared.workspace, path, () => () => {});
    }
    refuseOtherOwnersApp(request, appHost, domain);
    const cookie = request.cookies?.[APP_COOKIE];
    const userId = cookie ? await appCookieUser(deps.store.db, deps.clock, cookie, appHost.host) : undefined;
    const user = userId ? await deps.store.db.selectFrom('users').select(['id', 'username', 'role', 'suspended']).where('id', '=', userId).executeTakeFirst() : undefined;
    if (!user || user.suspended) {
      if (request.method === 'GET' && request.headers.upgrade === undefined) {
        reply.header('cache-control', 'no-store').redirect(new URL(appAuthorizePath(appHost.host, path), accessUrl).toString(), 302);
        return;
      }
      throw new AppError('UNAUTHENTICATED', `Open ${request.protocol}://${appHost.host}/ in the browser to sign in to this app through den.`);
    }
    // checked on every request: a narrower share level takes effect at once
    const workspace = await allowedWorkspace(deps, { userId: user.id, username: user.username, role: user.role }, appHost);
    await forwardTo(request, reply, appHost, workspace, path, (end) => deps.liveAccess.track({ userId: user.id, workspace: trackedWorkspace(workspace), since }, end));
  });

  async function forwardTo(request: FastifyRequest, reply: FastifyReply, appHost: AppHost, workspace: WorkspaceRow & { owner_name: string }, path: string, track: (end: () => void) => () => void): Promise<void> {
    const target = 'port' in appHost.target ? { port: appHost.target.port } : await appTarget(deps.store.db, deps.driver, workspace, appHost.target.app);
    await forwardThroughAgent(deps, timeoutMs, request, reply, {
      workspace,
      ...target,
      prefix: '',
      path,
      publicOrigin: `${request.protocol}://${appHost.host}`,
      strippedCookies: [APP_COOKIE, SESSION_COOKIE],
      denAuthorization: false,
      cors: { origin: ownAppOrigin(request, appHost, domain) },
      track,
    });
  }

  async function exchangeCode(request: FastifyRequest, reply: FastifyReply, appHost: AppHost): Promise<void> {
    const query = z.object({ code: z.string().min(1).max(200), next: z.string().max(4096).optional() }).safeParse(request.query);
    const redeemed = query.success ? await redeemAppCode(deps.store.db, deps.clock, query.data.code, appHost.host) : undefined;
    if (!redeemed) {
      throw new AppError('UNAUTHENTICATED', `This sign-in link for the app has expired or was used already. Open ${request.protocol}://${appHost.host}/ again.`);
    }
    reply
      .header('set-cookie', `${APP_COOKIE}=${redeemed.cookie}; Path=/; HttpOnly; SameSite=Lax; Max-Age=${APP_COOKIE_TTL_MS / 1000}${secure ? '; Secure' : ''}`)
      .header('cache-control', 'no-store')
      .header('referrer-policy', 'no-referrer')
      .redirect(localPath(query.data?.next), 302);
  }
}

/**
 * GET /apps/authorize?host=&next= on den's own origin (where the session is): the first half of an
 * app host's sign-in. A browser without a den session is sent to den's sign-in page, which
 * brings it back here once signed in.
 */
export async function appAuthorizeRoute(fastify: FastifyInstance, deps: AppProxyOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  app.get('/apps/authorize', {
    config: { auth: 'public' },
    schema: { hide: true, querystring: z.object({ host: z.string().max(300), next: z.string().max(4096).optional() }) },
  }, async (request, reply) => {
    const appHost = parseAppHost(request.query.host, deps.config.appsWildcardDomain);
    if (!appHost) throw new AppError('BAD_REQUEST', `'${request.query.host}' is not an app address of this den server. Open the app from \`den ports\` or \`den show\`.`);
    const principal = await resolvePrincipal(deps, request);
    if (!principal) {
      // den's sign-in page brings the browser back here (appReturnTarget checks the way back)
      return reply.header('cache-control', 'no-store').redirect(signInUrl(deps.config.accessUrl, appAuthorizePath(appHost.host, request.query.next)), 302);
    }
    await allowedWorkspace(deps, principal, appHost);
    const code = await issueAppCode(deps.store.db, deps.clock, principal.userId, appHost.host);
    const back = new URL(`${new URL(deps.config.accessUrl).protocol}//${appHost.host}${APP_AUTH_PATH}`);
    back.searchParams.set('code', code);
    back.searchParams.set('next', localPath(request.query.next));
    return reply.header('cache-control', 'no-store').header('referrer-policy', 'no-referrer').redirect(back.toString(), 302);
  });
}

/** The workspace an app host names and the share level of its app or port; undefined when there is no such workspace. */
async function sharedWorkspace(deps: AppProxyOptions, appHost: AppHost): Promise<{ workspace: WorkspaceRow & { owner_name: string }; level: ShareLevel } | undefined> {
  const workspace = await deps.store.db
    .selectFrom('workspaces')
    .innerJoin('users', 'users.id', 'workspaces.owner_id')
    .selectAll('workspaces')
    .select('users.username as owner_name')
    .where('users.username', '=', appHost.owner)
    .where('workspaces.name', '=', appHost.workspace)
    .where('workspaces.deleted_at', 'is', null)
    .executeTakeFirst();
  return workspace && { workspace, level: await effectiveShare(deps.store.db, workspace, appHost.target) };
}

/**
 * Whether `user` may open the app or port an app host names, by its share level (docs/apps.md):
 * `owner` lets in the workspace's owner only (not the owner role: the app could act as them),
 * `authenticated` and `public` every signed-in user. Refused: 404 to those who may not see the
 * workspace at all, 403 to the others.
 */
async function allowedWorkspace(deps: AppProxyOptions, user: { userId: string; username: string; role: Role }, appHost: AppHost): Promise<WorkspaceRow & { owner_name: string }> {
  const shared = await sharedWorkspace(deps, appHost);
  if (shared && (shared.level !== 'owner' || shared.workspace.owner_id === user.userId)) return shared.workspace;
  if (!shared || !canAccessWorkspace(user, shared.workspace.owner_id)) {
    throw new AppError('WORKSPACE_NOT_FOUND', `There is no workspace '${appHost.owner}/${appHost.workspace}' that you may open. Ask its owner to share the app with you.`);
  }
  throw new AppError('FORBIDDEN', `This app of '${appHost.owner}/${appHost.workspace}' is shared with its owner only; you are signed in as '${user.username}'. Ask '${appHost.owner}' to share it.`);
}
