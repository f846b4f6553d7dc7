import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import fastifyStatic from '@fastify/static';
import type { DenBase } from '../base.ts';
import { createWebBuilder, WEB_URL_PREFIX, type WebBuild, type WebBuilder } from './build.ts';

/** The dashboard's pages, as its router (web/src/dashboard/app.tsx) names them. */
export const DASHBOARD_PATHS = [
  '/',
  '/login',
  '/setup',
  '/settings',
  '/workspaces',
  '/workspaces/new',
  '/templates',
  '/templates/:name',
  '/users',
  '/shared',
  '/@:owner/:name',
  '/@:owner/:name/env',
] as const;

export interface WebRoutesOptions extends Pick<DenBase, 'config'> {
  /** where the pages come from; defaults to createWebBuilder with the data dir as its fallback */
  builder?: WebBuilder;
}

/**
 * The browser pages: the dashboard (DASHBOARD_PATHS), the terminal at
 * /@<owner>/<workspace>/terminal and the built assets under /web/<build id>/. All are public:
 * they hold no data. The pages sign in through the API (POST /api/v1/auth/login) when there is
 * no session; the API and the terminal websocket check the session and the workspace.
 */
export async function webRoutes(app: FastifyInstance, options: WebRoutesOptions): Promise<void> {
  const builder = options.builder ?? createWebBuilder({ fallbackDir: options.config.dataDir, log: app.log });
  // serve:false: only reply.sendFile, with our own routes (which declare their auth level);
  // preCompressed: the build writes .br/.gz next to each text asset
  await app.register(fastifyStatic, { root: builder.buildsDir, serve: false, preCompressed: true });

  // Built once, when the server starts (or by the first request, whichever comes first); a
  // failed build is retried by the next request.
  let built: Promise<WebBuild> | undefined;
  const current = (): Promise<WebBuild> => (built ??= builder.current().catch((error: unknown) => {
    built = undefined;
    throw error;
  }));
  const pages = new Map<string, { id: string; html: string }>();
  const sendPage = async (file: 'index.html' | 'terminal.html', reply: FastifyReply) => {
    const build = await current();
    let page = pages.get(file);
    if (page?.id !== build.id) {
      page = { id: build.id, html: withAccessUrl(await readFile(join(build.dir, file), 'utf8'), options.config.accessUrl) };
      pages.set(file, page);
    }
    pageHeaders(reply);
    return reply.type('text/html; charset=utf-8').send(page.html);
  };

  app.get('/@:owner/:name/terminal', { config: { auth: 'public' }, schema: { hide: true } }, (_request, reply) => sendPage('terminal.html', reply));
  // The dashboard's pages: one HTML document, the route is read in the browser. `/` lands on the
  // workspaces, the sign-in, or first-user setup on a server without users.
  for (const path of DASHBOARD_PATHS) {
    app.get(path, { config: { auth: 'public' }, schema: { hide: true } }, (_request, reply) => sendPage('index.html', reply));
  }

  app.get(`${WEB_URL_PREFIX}*`, { config: { auth: 'public' }, schema: { hide: true } }, (request, reply) => {
    const path = (request.params as { '*': string })['*'];
    // file names carry a content hash and the folder the build id: they never change
    return reply.sendFile(path, builder.buildsDir, { maxAge: '365d', immutable: true });
  });

  // Build while the server starts listening, so the first visitor does not wait for Vite.
  app.addHook('onListen', () => {
    current().catch((error: Error) => app.log.warn({ err: error }, 'Building the web pages failed; the next page request will retry.'));
  });
}

/**
 * Tells the page the server's access URL: cookie-authenticated websockets are accepted only from
 * that origin, so a page opened under another name (localhost vs. 127.0.0.1, a proxy's host)
 * says where to go instead of retrying a socket that can never open.
 */
function withAccessUrl(html: string, accessUrl: string): string {
  const escaped = accessUrl.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return html.replace('</head>', `  <meta name="den-access-url" content="${escaped}" />\n  </head>`);
}

function pageHeaders(reply: FastifyReply): void {
  reply.header('cache-control', 'no-cache');
  reply.header('x-content-type-options', 'nosniff');
  reply.header('referrer-policy', 'same-origin');
  // xterm.js and the page set inline styles; everything else (scripts, the websocket) is this origin
  reply.header('content-security-policy', "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'");
}
