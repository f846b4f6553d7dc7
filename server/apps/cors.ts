import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../../protocol/errors.ts';
import { parseAppHost, type AppHost } from './subdomain.ts';

/** how long a browser may remember an allowed preflight */
const PREFLIGHT_MAX_AGE_SECONDS = 600;
/** a method or header name list as a preflight asks for it: tokens and commas only */
const TOKEN_LIST = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:\s*,\s*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*$/;
const MAX_REQUESTED_HEADERS = 2_000;

/**
 * Whether `request` to an app host comes from another app of the same owner (docs/apps.md:
 * CORS): its Origin is an app host of den's wildcard domain, on the same scheme, named for the
 * same owner, and not the app host itself. Returns that origin, else undefined.
 */
export function ownAppOrigin(request: FastifyRequest, appHost: AppHost, domain: string | undefined): string | undefined {
  const origin = originOf(request);
  if (!origin) return undefined;
  const from = parseAppHost(origin.host, domain);
  return from && from.owner === appHost.owner && from.host !== appHost.host ? origin.origin : undefined;
}

/**
 * A CORS preflight to an app host, answered by den itself (a preflight carries no cookie, so it
 * could not pass the app's sign-in): allowed, with credentials, for another app of the same
 * owner; refused with 403 for any other origin, so the browser does not send the request.
 * Returns false when `request` is not a preflight.
 */
export function answerPreflight(request: FastifyRequest, reply: FastifyReply, appHost: AppHost, domain: string | undefined): boolean {
  const method = request.headers['access-control-request-method'];
  if (request.method !== 'OPTIONS' || request.headers.origin === undefined || typeof method !== 'string') return false;
  const origin = ownAppOrigin(request, appHost, domain);
  if (!origin) {
    throw new AppError('FORBIDDEN', `den lets only the other apps of '${appHost.owner}' make cross-origin requests to this app; ${request.headers.origin} is not one of them.`);
  }
  const headers = request.headers['access-control-request-headers'];
  if (!TOKEN_LIST.test(method) || (typeof headers === 'string' && headers !== '' && (headers.length > MAX_REQUESTED_HEADERS || !TOKEN_LIST.test(headers)))) {
    throw new AppError('BAD_REQUEST', 'This preflight asks for a method or headers that are not HTTP tokens.');
  }
  reply
    .code(204)
    .header('access-control-allow-origin', origin)
    .header('access-control-allow-credentials', 'true')
    .header('access-control-allow-methods', method)
    .header('access-control-max-age', String(PREFLIGHT_MAX_AGE_SECONDS))
    .header('vary', 'Origin');
  if (typeof headers === 'string' && headers !== '') reply.header('access-control-allow-headers', headers);
  void reply.send();
  return true;
}

/**
 * Refuses a request that another owner's app makes to this one with the visitor's cookie and
 * that would change something or open a websocket (anything but GET and HEAD, or an upgrade):
 * app hosts of one den are the same site, so the browser sends this app's cookie along.
 */
export function refuseOtherOwnersApp(request: FastifyRequest, appHost: AppHost, domain: string | undefined): void {
  const origin = originOf(request);
  if (!origin) return;
  const from = parseAppHost(origin.host, domain);
  if (!from || from.owner === appHost.owner) return;
  if (request.method === 'GET' && request.headers.upgrade === undefined) return;
  if (request.method === 'HEAD') return;
  throw new AppError('FORBIDDEN', `An app of '${from.owner}' may not send requests to an app of '${appHost.owner}'. Open this app at its own address instead.`);
}

function originOf(request: FastifyRequest): URL | undefined {
  const header = request.headers.origin;
  if (typeof header !== 'string' || header === 'null') return undefined;
  try {
    const url = new URL(header);
    return url.protocol === `${request.protocol}:` ? url : undefined;
  } catch {
    return undefined;
  }
}
