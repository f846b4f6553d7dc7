import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../../protocol/errors.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import type { RuntimeDriver } from '../runtimes/driver.ts';
import { openTcpStream, WindowBudget } from '../agents/tcp-stream.ts';
import { resolvePrincipal, trackLiveAccess, type AuthDeps } from '../auth/plugin.ts';
import { SESSION_COOKIE } from '../auth/sessions.ts';
import { findWorkspaceFor, trackedWorkspace } from '../workspaces/access.ts';
import type { ActivityRecorder } from '../workspaces/activity.ts';
import { appTarget, type AppTarget } from './apps.ts';
import { forwardToApp } from './forward.ts';
import { signInUrl } from './return-target.ts';
import { AppConnections } from './upstream-pool.ts';
import { upstreamRequestHeaders } from './forward-headers.ts';

export interface AppProxyOptions extends AuthDeps {
  agents: AgentHub;
  activity: ActivityRecorder;
  /** where environment services listen, for their preview URLs */
  driver: Pick<RuntimeDriver, 'resolveEndpoints'>;
}

/**
 * Path-mode URLs of a workspace's apps and ports (docs/apps.md):
 *   /@:owner/:name/apps/:app/*   an app the template declares, or an environment service's preview, by name
 *   /@:owner/:name/ports/:port/* any port listening inside the workspace
 * HTTP and websockets go through the agent's `tcp` channels (a pool of keep-alive connections per
 * workspace port, server/apps/upstream-pool.ts; a channel of its own per websocket), with the
 * prefix taken off. Only the workspace's owner may open them (share level `owner`): path mode
 * serves the app from den's own origin, where its scripts could act with the visitor's den
 * session, so not even a den owner is let into someone else's app here.
 *
 * The proxying runs in preHandler, not in the handler: @fastify/websocket wraps every handler
 * and would answer a websocket upgrade itself; a hijack in preHandler keeps the raw socket ours.
 */
export async function appProxyRoutes(app: FastifyInstance, deps: AppProxyOptions): Promise<void> {
  const timeoutMs = appResponseTimeoutMs(deps);
  const route = (url: string, targetOf: (request: FastifyRequest, workspace: WorkspaceFound) => Promise<AppTarget>) => {
    registerProxyRoute(app, url, (request, reply) => proxy(request, reply, targetOf));
  };
  route('/@:owner/:name/ports/:port', async (request) => {
    const port = Number((request.params as { port: string }).port);
    if (!/^\d{1,5}$/.test((request.params as { port: string }).port) || port < 1 || port > 65535) {
      throw new AppError('BAD_REQUEST', `'${(request.params as { port: string }).port}' is not a port. Use a number from 1 to 65535, as in /@owner/workspace/ports/8080/.`);
    }
    return { port };
  });
  route('/@:owner/:name/apps/:app', async (request, workspace) => appTarget(deps.store.db, deps.driver, workspace, (request.params as { app: string }).app));

  async function proxy(request: FastifyRequest, reply: FastifyReply, targetOf: (request: FastifyRequest, workspace: WorkspaceFound) => Promise<AppTarget>): Promise<void> {
    checkHostHeader(request.headers.host);
    const { owner, name: ws } = request.params as { owner: string; name: string };
    const principal = await resolvePrincipal(deps, request);
    if (!principal) {
      // a browser opening the page goes to den's sign-in page and comes back (appReturnTarget);
      // scripts, websockets and writes cannot follow that, and get the sentence
      if (request.method === 'GET' && request.headers.upgrade === undefined && request.headers.accept?.includes('text/html')) {
        reply.header('cache-control', 'no-store').redirect(signInUrl(deps.config.accessUrl, request.raw.url ?? '/'), 302);
        return;
      }
      throw new AppError('UNAUTHENTICATED', `This app is shared with its owner only. Sign in to den as '${owner}' and open it again.`);
    }
    const workspace = await findWorkspaceFor(deps.store.db, principal, owner, ws);
    if (workspace.owner_id !== principal.userId) {
      throw new AppError('FORBIDDEN', `This app of '${owner}/${ws}' is shared with its owner only; you are signed in as '${principal.username}'. Ask '${owner}' to share it.`);
    }
    const target = await targetOf(request, workspace);
    const { prefix, path } = splitPrefix(request.raw.url ?? '/');
    if (!request.raw.url?.startsWith(`${prefix}/`)) {
      // the app's relative links resolve under the prefix only with the slash after it
      reply.redirect(`${prefix}${path}`, 308);
      return;
    }
    await forwardThroughAgent(deps, timeoutMs, request, reply, {
      workspace,
      ...target,
      prefix,
      path,
      publicOrigin: new URL(deps.config.accessUrl).origin,
      strippedCookies: [SESSION_COOKIE],
      denAuthorization: principal.via === 'token',
      track: (end) => trackLiveAccess(request, trackedWorkspace(workspace), end),
    });
  }
}

type WorkspaceFound = Awaited<ReturnType<typeof findWorkspaceFor>>;

/** What forwardThroughAgent needs to know of a request that is allowed through. */
export interface AllowedRequest {
  workspace: { id: string };
  port: number;
  /** an environment service's host (its preview URL); absent: the workspace's loopback */
  host?: string;
  prefix: string;
  path: string;
  /** the origin the browser is on (den's in path mode, the app's own in subdomain mode) */
  publicOrigin: string;
  strippedCookies: readonly string[];
  denAuthorization: boolean;
  /** subdomain mode: den sets the CORS headers of the response, allowing `origin` when defined */
  cors?: { origin: string | undefined };
  /** keeps the connection only as long as the access that opened it; returns the release */
  track: (end: () => void) => () => void;
}

/**
 * The receive window of an app's tcp channel: 2 MiB lets a download run several frames ahead of
 * the app's reads instead of stalling every 256 KiB for the agent's round trip (docs/benchmarks.md);
 * all app channels of this server hold at most 64 MiB in large windows together, the rest open
 * with the default window.
 */
const APP_WINDOWS = new WindowBudget(2 * 1024 * 1024, 64 * 1024 * 1024);

/**
 * Finds the app's upstream (an idle pooled connection, or a new `tcp` channel: AGENT_NOT_CONNECTED,
 * TCP_CONNECT_FAILED are thrown before anything is sent), hijacks the reply and forwards the
 * request to the app: the part path and subdomain mode share once each has decided who may pass.
 */
export async function forwardThroughAgent(deps: Pick<AppProxyOptions, 'agents' | 'activity' | 'config'>, timeoutMs: number, request: FastifyRequest, reply: FastifyReply, allowed: AllowedRequest): Promise<void> {
  const host = request.headers.host!;
  const upgrade = request.headers.upgrade !== undefined && request.method === 'GET';
  const upstream = await connectionsOf(deps.agents).upstream(allowed.workspace.id, { host: allowed.host, port: allowed.port }, !upgrade);
  deps.activity.touch(allowed.workspace.id);
  reply.hijack();
  const headers = upstreamRequestHeaders(request.headers, {
    port: allowed.port,
    strippedCookies: allowed.strippedCookies,
    denAuthorization: allowed.denAuthorization,
    publicOrigin: allowed.publicOrigin,
    publicHost: host,
    publicProto: request.protocol === 'https' ? 'https' : 'http',
    prefix: allowed.prefix,
    clientIp: request.ip,
    trustForwarded: deps.config.trustedProxies.length > 0,
    upgrade,
  });
  const forwarded = forwardToApp(request, reply.raw, upstream, { path: allowed.path, headers, upgrade, timeoutMs, cors: allowed.cors });
  const endAccess = allowed.track(() => {
    request.raw.socket.destroy();
    forwarded.abort();
  });
  // per response, not per socket: a keep-alive connection carries many requests
  (upgrade ? request.raw.socket : reply.raw).once('close', endAccess);
}

/** One pool of upstream connections per hub (per server). */
function connectionsOf(agents: AgentHub): AppConnections {
  let connections = POOLS.get(agents);
  if (!connections) {
    connections = new AppConnections((workspaceId, address) => openTcpStream(agents, workspaceId, address, APP_WINDOWS));
    POOLS.set(agents, connections);
  }
  return connections;
}

const POOLS = new WeakMap<AgentHub, AppConnections>();

/** Refuses a Host header that is not a host name (with an optional port): it is passed to the app as X-Forwarded-Host. */
export function checkHostHeader(host: string | undefined): void {
  if (!host || !HOST_HEADER.test(host)) {
    throw new AppError('BAD_REQUEST', 'The Host header of this request is not a host name. Open the app through the address of this den server.');
  }
}

/**
 * Registers `url` and everything under it (the router ignores a trailing slash) as an app URL
 * answered by `proxy`, on a plugin whose bodies are not parsed: they stream to the app as they
 * arrive, with no body limit (backpressure bounds memory). Call once per encapsulated plugin.
 */
export function registerProxyRoute(app: FastifyInstance, url: string, proxy: (request: FastifyRequest, reply: FastifyReply) => Promise<void>): void {
  if (!bodyParsersRemoved.has(app)) {
    app.removeAllContentTypeParsers();
    app.addContentTypeParser('*', (_request, _payload, done) => done(null));
    bodyParsersRemoved.add(app);
  }
  for (const path of [url, `${url}/*`]) {
    app.route({
      method: [...PROXIED_METHODS],
      url: path,
      exposeHeadRoute: false,
      config: { auth: 'public' },
      schema: { hide: true },
      preHandler: proxy,
      handler: async () => {
        throw new AppError('INTERNAL', 'The app proxy answered in its handler. This is a bug in den; please report it.');
      },
    });
  }
}

const bodyParsersRemoved = new WeakSet<FastifyInstance>();

/** a dev server compiling its first page can take long; config.appResponseTimeoutSeconds (60 s) bounds it */
export function appResponseTimeoutMs(deps: Pick<AppProxyOptions, 'config'>): number {
  return deps.config.appResponseTimeoutSeconds * 1000;
}

/** The methods an app URL forwards (HEAD too: the app answers it, not den). */
export const PROXIED_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/** host, host:port, [v6]:port; anything else (spaces, slashes, '@', control bytes) is refused */
const HOST_HEADER = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;

/** `/@alice/dev/ports/8080/x?y` -> prefix `/@alice/dev/ports/8080`, path `/x?y` */
export function splitPrefix(url: string): { prefix: string; path: string } {
  const match = /^(?:\/[^/?]*){4}/.exec(url);
  const prefix = match ? match[0] : '';
  const rest = url.slice(prefix.length);
  return { prefix, path: rest.startsWith('/') ? rest : `/${rest}` };
}
