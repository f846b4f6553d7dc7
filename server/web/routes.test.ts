import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { brotliCompressSync } from 'node:zlib';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError } from '../../protocol/errors.ts';
import { registerErrorHandling } from '../http/errors.ts';
import type { Config } from '../config.ts';
import { webRoutes } from './routes.ts';
import type { WebBuild, WebBuilder } from './build.ts';

/**
 * The page and asset routes over a stand-in build (the Vite build itself is exercised by the
 * browser test, test/e2e/terminal.test.ts, through the real server).
 */
describe('web routes', () => {
  let dir: string;
  let app: FastifyInstance;
  let result: WebBuild | Error;
  let builds = 0;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'den-web-test-'));
    mkdirSync(join(dir, 'b1', 'assets'), { recursive: true });
    writeFileSync(join(dir, 'b1', 'terminal.html'), '<!doctype html><head><script type="module" src="/web/b1/assets/app.js"></script></head>');
    writeFileSync(join(dir, 'b1', 'index.html'), '<!doctype html><head><title>dashboard</title><script type="module" src="/web/b1/assets/dash.js"></script></head>');
    writeFileSync(join(dir, 'b1', 'assets', 'app.js'), 'console.log("den");');
    writeFileSync(join(dir, 'b1', 'assets', 'app.js.br'), brotliCompressSync('console.log("den");'));
    writeFileSync(join(dir, 'secret.json'), '{"not":"served"}');
    result = { id: 'b1', dir: join(dir, 'b1') };
    const builder: WebBuilder = {
      buildsDir: dir,
      current: async () => {
        builds++;
        if (result instanceof Error) throw result;
        return result;
      },
    };
    // as buildServer configures it
    app = Fastify({ routerOptions: { ignoreTrailingSlash: true } });
    registerErrorHandling(app);
    await app.register(webRoutes, { builder, config: { accessUrl: 'https://den.example/"x' } as Config });
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves the terminal page for any workspace path, never cached and with a strict CSP', async () => {
    const response = await app.inject({ url: '/@alice/dev/terminal?session=abc' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(response.headers['cache-control']).toBe('no-cache');
    expect(response.headers['content-security-policy']).toContain("default-src 'self'");
    expect(response.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(response.body).toContain('/web/b1/assets/app.js');
    // the page checks its origin against the access URL (escaped into the attribute)
    expect(response.body).toContain('<meta name="den-access-url" content="https://den.example/&quot;x" />');
    expect((await app.inject({ url: '/@alice/dev/terminal/' })).statusCode).toBe(200);
  });

  it('serves assets by build id, immutable, precompressed when the browser accepts it', async () => {
    const plain = await app.inject({ url: '/web/b1/assets/app.js' });
    expect(plain.statusCode).toBe(200);
    expect(plain.body).toBe('console.log("den");');
    expect(plain.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    const br = await app.inject({ url: '/web/b1/assets/app.js', headers: { 'accept-encoding': 'br, gzip' } });
    expect(br.headers['content-encoding']).toBe('br');
  });

  it('refuses unknown files and anything outside the builds folder', async () => {
    for (const url of ['/web/b1/assets/none.js', '/web/../secret.json', '/web/b1/%2e%2e/%2e%2e/secret.json', '/web/..%2fsecret.json']) {
      const response = await app.inject({ url });
      expect([400, 403, 404], url).toContain(response.statusCode);
      expect(response.body).not.toContain('served');
    }
  });

  it('serves the dashboard at / and at each of its pages, from the build made once', async () => {
    const before = builds;
    for (const url of ['/', '/login', '/setup', '/workspaces', '/workspaces/new', '/templates', '/templates/starter', '/users', '/settings', '/@alice/dev', '/@alice/dev/']) {
      const response = await app.inject({ url });
      expect(response.statusCode, url).toBe(200);
      expect(response.headers['content-type']).toBe('text/html; charset=utf-8');
      expect(response.headers['content-security-policy']).toContain("frame-ancestors 'none'");
      expect(response.body, url).toContain('/web/b1/assets/dash.js');
    }
    // the build was made (or found) once, when the first page was asked for
    expect(builds - before).toBe(0);
    // API paths are not pages: still the JSON 404
    expect((await app.inject({ url: '/api/v1/nothing' })).statusCode).toBe(404);
  });
});

describe('web routes when the build fails', () => {
  it('answers WEB_BUILD_FAILED with the builder\'s sentence, and builds again on the next request', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'den-web-test-'));
    mkdirSync(join(dir, 'b2'));
    writeFileSync(join(dir, 'b2', 'index.html'), '<!doctype html><head></head>');
    let fail = true;
    const builder: WebBuilder = {
      buildsDir: dir,
      current: async () => {
        if (fail) throw new AppError('WEB_BUILD_FAILED', 'Building the web pages from web/ failed: boom. Fix the error and reload.');
        return { id: 'b2', dir: join(dir, 'b2') };
      },
    };
    const app = Fastify({ routerOptions: { ignoreTrailingSlash: true } });
    registerErrorHandling(app);
    await app.register(webRoutes, { builder, config: { accessUrl: 'http://127.0.0.1:7080' } as Config });
    await app.ready();
    try {
      const response = await app.inject({ url: '/' });
      expect(response.statusCode).toBe(500);
      expect(response.json().error).toMatchObject({ code: 'WEB_BUILD_FAILED', message: expect.stringContaining('boom') });
      fail = false;
      expect((await app.inject({ url: '/' })).statusCode).toBe(200);
    } finally {
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
