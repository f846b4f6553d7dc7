import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, isAppError } from '../../protocol/errors.ts';
import type { AgentHub, ExecSession } from '../agents/hub-types.ts';
import { openTcpStream } from '../agents/tcp-stream.ts';
import { resolvePrincipal, trackLiveAccess, type AuthDeps } from '../auth/plugin.ts';
import { SESSION_COOKIE } from '../auth/sessions.ts';
import { findWorkspaceFor, trackedWorkspace } from '../workspaces/access.ts';
import type { ActivityRecorder } from '../workspaces/activity.ts';
import { appPort } from './apps.ts';
import { downstreamResponseHeaders, upstreamRequestHeaders } from './forward-headers.ts';

export interface AppProxyOptions extends AuthDeps {
  agents: AgentHub;
  activity: ActivityRecorder;
}

const PROXIED_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;

/**
 * Path-mode URLs of a workspace's apps and ports (docs/apps.md):
 *   /@:owner/:name/apps/:app/*   an app the template declares, by name
 *   /@:owner/:name/ports/:port/* any port listening inside the workspace
 * HTTP and websockets go through the agent's `tcp` channel, one channel per request, with the
 * prefix taken off. Only the workspace's owner may open them (share level `owner`): path mode
 * serves the app from den's own origin, where its scripts could act with the visitor's den
 * session, so not even a den owner is let into someone else's app here.
 *
 * The proxying runs in preHandler, not in the handler: @fastify/websocket wraps every handler
 * and would answer a websocket upgrade itself; a hijack in preHandler keeps the raw socket ours.
 */
export async function appProxyRoutes(app: FastifyInstance, deps: AppProxyOptions): Promise<void> {
  // Bodies stream to the app as they arrive: no parsing, no body limit (backpressure bounds memory).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, _payload, done) => done(null));
  // a dev server compiling its first page can take long; config.appResponseTimeoutSeconds (60 s) bounds it
  const timeoutMs = deps.config.appResponseTimeoutSeconds * 1000;

  const unreachable = async () => {
    throw new AppError('INTERNAL', 'The app proxy answered in its handler. This is a bug in den; please report it.');
  };
  // `/@a/ws/ports/8080` (the router ignores a trailing slash) and everything under it
  const route = (url: string, portOf: (request: FastifyRequest, templateVersionId: string) => Promise<number>) => {
    for (const path of [url, `${url}/*`]) app.route({
      method: [...PROXIED_METHODS],
      url: path,
      exposeHeadRoute: false,
      config: { auth: 'public' },
      schema: { hide: true },
      preHandler: async (request, reply) => proxy(request, reply, portOf),
      handler: unreachable,
    });
  };
  route('/@:owner/:name/ports/:port', async (request) => {
    const port = Number((request.params as { port: string }).port);
    if (!/^\d{1,5}$/.test((request.params as { port: string }).port) || port < 1 || port > 65535) {
      throw new AppError('BAD_REQUEST', `'${(request.params as { port: string }).port}' is not a port. Use a number from 1 to 65535, as in /@owner/workspace/ports/8080/.`);
    }
    return port;
  });
  route('/@:owner/:name/apps/:app', async (request, versionId) => appPort(deps.store.db, versionId, (request.params as { app: string }).app));

  async function proxy(request: FastifyRequest, reply: FastifyReply, portOf: (request: FastifyRequest, templateVersionId: string) => Promise<number>): Promise<void> {
    const host = request.headers.host ?? '';
    if (!HOST_HEADER.test(host)) {
      throw new AppError('BAD_REQUEST', 'The Host header of this request is not a host name. Open the app through the address of this den server.');
    }
    const { owner, name: ws } = request.params as { owner: string; name: string };
    const principal = await resolvePrincipal(deps, request);
    if (!principal) {
      throw new AppError('UNAUTHENTICATED', `This app is shared with its owner only. Sign in to den as '${owner}' and open it again.`);
    }
    const workspace = await findWorkspaceFor(deps.store.db, principal, owner, ws);
    if (workspace.owner_id !== principal.userId) {
      throw new AppError('FORBIDDEN', `This app of '${owner}/${ws}' is shared with its owner only; you are signed in as '${principal.username}'. Ask '${owner}' to share it.`);
    }
    const port = await portOf(request, workspace.template_version_id);
    const { prefix, path } = splitPrefix(request.raw.url ?? '/');
    if (!request.raw.url?.startsWith(`${prefix}/`)) {
      // the app's relative links resolve under the prefix only with the slash after it
      reply.redirect(`${prefix}${path}`, 308);
      return;
    }
    const tcp = await openTcpStream(deps.agents, workspace.id, { port });
    deps.activity.touch(workspace.id);
    reply.hijack();
    const accessUrl = new URL(deps.config.accessUrl);
    const upgrade = request.headers.upgrade !== undefined && request.method === 'GET';
    const headers = upstreamRequestHeaders(request.headers, {
      port,
      sessionCookie: SESSION_COOKIE,
      denAuthorization: principal.via === 'token',
      publicOrigin: accessUrl.origin,
      publicHost: host,
      publicProto: request.protocol === 'https' ? 'https' : 'http',
      prefix,
      clientIp: request.ip,
      trustForwarded: deps.config.trustedProxies.length > 0,
      upgrade,
    });
    const endAccess = trackLiveAccess(request, trackedWorkspace(workspace), () => {
      request.raw.socket.destroy();
      tcp.stdio.destroy();
    });
    // per response, not per socket: a keep-alive connection carries many requests
    (upgrade ? request.raw.socket : reply.raw).once('close', endAccess);
    if (upgrade) forwardUpgrade(request, tcp, path, headers, timeoutMs);
    else forwardHttp(request, reply, tcp, path, headers, timeoutMs);
  }
}

/** host, host:port, [v6]:port; anything else (spaces, slashes, '@', control bytes) is refused */
const HOST_HEADER = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?$/;

/** `/@alice/dev/ports/8080/x?y` -> prefix `/@alice/dev/ports/8080`, path `/x?y` */
export function splitPrefix(url: string): { prefix: string; path: string } {
  const match = /^(?:\/[^/?]*){4}/.exec(url);
  const prefix = match ? match[0] : '';
  const rest = url.slice(prefix.length);
  return { prefix, path: rest.startsWith('/') ? rest : `/${rest}` };
}

function forwardHttp(request: FastifyRequest, reply: FastifyReply, tcp: ExecSession, path: string, headers: Record<string, string | string[]>, timeoutMs: number): void {
  const client = reply.raw;
  const upstream = httpRequest({ method: request.method, path, headers, createConnection: () => tcp.stdio as Socket });
  // the app's time to answer starts once it has the whole request (an upload may take long)
  let timer: NodeJS.Timeout | undefined;
  let answered = false;
  upstream.once('finish', () => {
    if (!answered) timer = setTimeout(() => fail(new AppError('APP_TIMEOUT', `The app on this port sent no answer in ${Math.round(timeoutMs / 1000)} s. Check that it is running and not stuck, then reload.`)), timeoutMs);
  });
  const fail = (error: unknown) => {
    clearTimeout(timer);
    upstream.destroy();
    tcp.stdio.destroy();
    if (client.headersSent) {
      client.destroy();
      return;
    }
    const appError = isAppError(error) ? error : new AppError('APP_UNREACHABLE', 'The app closed the connection before it answered. Check its logs in the workspace, then reload.');
    sendErrorPage(client, appError);
  };
  upstream.on('response', (response: IncomingMessage) => {
    answered = true;
    clearTimeout(timer);
    client.writeHead(response.statusCode ?? 502, response.statusMessage, downstreamResponseHeaders(response.rawHeaders));
    response.pipe(client);
    response.on('error', () => client.destroy());
    response.on('aborted', () => client.destroy());
  });
  upstream.on('error', fail);
  // the browser went away: the connection in the workspace goes too
  client.on('close', () => {
    clearTimeout(timer);
    if (!client.writableFinished) upstream.destroy();
    tcp.stdio.destroy();
  });
  request.raw.pipe(upstream);
}

function forwardUpgrade(request: FastifyRequest, tcp: ExecSession, path: string, headers: Record<string, string | string[]>, timeoutMs: number): void {
  const client = request.raw.socket;
  const upstream = httpRequest({ method: 'GET', path, headers, createConnection: () => tcp.stdio as Socket });
  const timer = setTimeout(() => upstream.destroy(new AppError('APP_TIMEOUT', 'The app did not answer the websocket upgrade.')), timeoutMs);
  upstream.on('upgrade', (response, socket, head) => {
    clearTimeout(timer);
    client.write(rawHead(response));
    if (head.length > 0) client.write(head);
    const clientHead = headOf(request.raw);
    if (clientHead.length > 0) socket.write(clientHead);
    socket.pipe(client);
    client.pipe(socket);
    socket.on('error', () => client.destroy());
    client.on('error', () => socket.destroy());
    socket.on('close', () => client.destroy());
    client.on('close', () => socket.destroy());
  });
  // the app answered without switching protocols (a 404, a 403 for a foreign Origin): pass that on
  upstream.on('response', (response) => {
    clearTimeout(timer);
    client.write(rawHead(response));
    response.pipe(client);
  });
  upstream.on('error', (error) => {
    clearTimeout(timer);
    tcp.stdio.destroy();
    const appError = isAppError(error) ? error : new AppError('APP_UNREACHABLE', 'The app closed the connection before it answered the websocket upgrade.');
    if (client.writable) client.end(`HTTP/1.1 ${appError.status} ${appError.code}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n${appError.message}\n`);
  });
  client.on('close', () => {
    clearTimeout(timer);
    upstream.destroy();
    tcp.stdio.destroy();
  });
  upstream.end();
}

function rawHead(response: IncomingMessage): string {
  const lines = [`HTTP/1.1 ${response.statusCode} ${response.statusMessage ?? ''}`];
  const keepFraming = response.statusCode === 101;
  const headers = keepFraming ? [...response.rawHeaders] : downstreamResponseHeaders(response.rawHeaders);
  for (let i = 0; i < headers.length; i += 2) lines.push(`${headers[i]}: ${headers[i + 1]}`);
  if (!keepFraming) lines.push('Connection: close');
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** Bytes the client sent after its upgrade request head (@fastify/websocket keeps them on the request). */
function headOf(raw: IncomingMessage): Buffer {
  const key = Object.getOwnPropertySymbols(raw).find((symbol) => symbol.description === 'ws-head');
  const head = key ? (raw as unknown as Record<symbol, unknown>)[key] : undefined;
  return Buffer.isBuffer(head) ? head : Buffer.alloc(0);
}

function sendErrorPage(client: FastifyReply['raw'], error: AppError): void {
  const body = `<!doctype html><meta charset="utf-8"><title>${error.status} ${error.code}</title><h1>${error.code}</h1><p>${escapeHtml(error.message)}</p>\n`;
  client.writeHead(error.status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  client.end(body);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
