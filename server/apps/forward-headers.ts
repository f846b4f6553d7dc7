import type { IncomingHttpHeaders } from 'node:http';
import { SESSION_COOKIE } from '../auth/sessions.ts';
import { APP_COOKIE } from './app-tokens.ts';

/**
 * What an app in a workspace sees of a request den proxies to it (docs/apps.md):
 *  - `Host` is `localhost:<port>`, the address the app listens on, so dev servers that check
 *    it (Vite's allowedHosts, webpack-dev-server) accept the request unmodified; the browser's
 *    host is in `X-Forwarded-Host`, its scheme in `X-Forwarded-Proto`, the stripped path prefix
 *    in `X-Forwarded-Prefix`, the client's address appended to `X-Forwarded-For`;
 *  - an `Origin` of den's own origin (the page came through the proxy) becomes
 *    `http://localhost:<port>`, so websocket origin checks (code-server, Jupyter) pass; any other
 *    Origin is passed as it is, for the app to judge;
 *  - den's credentials never reach it: den's cookies (den_session, den_app) are taken out of
 *    `Cookie`, and an `Authorization` header that signed the request in to den is removed;
 *  - hop-by-hop headers (RFC 9110 7.6.1) are dropped; a websocket upgrade keeps its
 *    `Connection: upgrade` / `Upgrade` pair.
 */
export function upstreamRequestHeaders(incoming: IncomingHttpHeaders, context: ForwardContext): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const hopByHop = hopByHopOf(incoming.connection);
  for (const [name, value] of Object.entries(incoming)) {
    if (value === undefined || hopByHop.has(name)) continue;
    if (name === 'host' || name === 'cookie' || name === 'origin' || name.startsWith('x-forwarded-')) continue;
    if (name === 'authorization' && context.denAuthorization) continue;
    if (name === 'x-csrf-token') continue;
    out[name] = value;
  }
  out.host = `localhost:${context.port}`;
  const cookie = withoutCookies(incoming.cookie, context.strippedCookies);
  if (cookie) out.cookie = cookie;
  if (incoming.origin !== undefined) out.origin = incoming.origin === context.publicOrigin ? `http://localhost:${context.port}` : incoming.origin;
  const forwardedFor = incoming['x-forwarded-for'];
  out['x-forwarded-for'] = context.trustForwarded && typeof forwardedFor === 'string' && forwardedFor ? `${forwardedFor}, ${context.clientIp}` : context.clientIp;
  out['x-forwarded-host'] = context.publicHost;
  out['x-forwarded-proto'] = context.publicProto;
  if (context.prefix) out['x-forwarded-prefix'] = context.prefix;
  if (context.upgrade) {
    out.connection = 'upgrade';
    out.upgrade = String(incoming.upgrade);
  }
  return out;
}

export interface ForwardContext {
  /** the port in the workspace the request goes to */
  port: number;
  /** den's cookies, taken out: its session (path mode), the app origin's token (subdomain mode) */
  strippedCookies: readonly string[];
  /** the request signed in to den with its Authorization header (it is taken out) */
  denAuthorization: boolean;
  /** den's origin as the browser sees it (`https://den.example.com`) */
  publicOrigin: string;
  publicHost: string;
  publicProto: 'http' | 'https';
  /** the path prefix den took off (`/@alice/dev/ports/8080`); empty in subdomain mode */
  prefix: string;
  clientIp: string;
  /** X-Forwarded-For from the client came through a trusted proxy: append to it rather than replace it */
  trustForwarded: boolean;
  upgrade: boolean;
}

/**
 * The headers of an app's response as den passes them to the browser: hop-by-hop headers are
 * dropped (Node's server sets its own framing), and so is a Set-Cookie of one of den's own
 * cookies (in path mode the app shares den's origin and could otherwise replace the visitor's
 * session); everything else is kept with its case and repeats (several Set-Cookie).
 * `rawHeaders` is Node's flat [name, value, ...] list.
 * With `cors` (subdomain mode) den decides cross-origin reads, not the app (docs/apps.md): the
 * app's own `Access-Control-*` headers are dropped, and a request from another app of the same
 * owner (`cors.origin`) is allowed with credentials.
 */
export function downstreamResponseHeaders(rawHeaders: readonly string[], cors?: { origin: string | undefined }): string[] {
  const connection: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i].toLowerCase() === 'connection') connection.push(rawHeaders[i + 1]);
  const hopByHop = hopByHopOf(connection.join(','));
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i].toLowerCase();
    if (hopByHop.has(name) || (name === 'set-cookie' && DEN_COOKIES.includes(rawHeaders[i + 1].split('=', 1)[0].trim()))) continue;
    if (cors && name.startsWith('access-control-')) continue;
    out.push(rawHeaders[i], rawHeaders[i + 1]);
  }
  if (cors?.origin) out.push('Access-Control-Allow-Origin', cors.origin, 'Access-Control-Allow-Credentials', 'true', 'Vary', 'Origin');
  return out;
}

const DEN_COOKIES = [SESSION_COOKIE, APP_COOKIE];

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade'];

function hopByHopOf(connection: string | undefined): Set<string> {
  const names = new Set(HOP_BY_HOP);
  for (const token of (connection ?? '').split(',')) {
    const name = token.trim().toLowerCase();
    if (name) names.add(name);
  }
  return names;
}

function withoutCookies(header: string | undefined, names: readonly string[]): string | undefined {
  if (!header) return undefined;
  const kept = header.split(';').map((pair) => pair.trim()).filter((pair) => pair && !names.includes(pair.split('=', 1)[0].trim()));
  return kept.length > 0 ? kept.join('; ') : undefined;
}
