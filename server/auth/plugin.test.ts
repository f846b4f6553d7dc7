import cookie from '@fastify/cookie';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { authPlugin, DOCS_PREFIX, type AuthDeps } from './plugin.ts';

// The start-up checks need no store: they run when routes are registered, and no request here
// reaches authentication.
async function appWithAuth() {
  const app = Fastify();
  await app.register(cookie);
  await app.register(authPlugin, {} as AuthDeps);
  return app;
}

describe('authPlugin route checks', () => {
  it('refuses to register a route that declares no access level', async () => {
    const app = await appWithAuth();
    expect(() => app.get('/forgotten', async () => 'hi')).toThrow(/Route GET \/forgotten declares no valid config\.auth/);
    await app.close();
  });

  it('refuses an access level it does not know', async () => {
    const app = await appWithAuth();
    expect(() => app.get('/typo', { config: { auth: 'admin' as never } }, async () => 'hi')).toThrow(/declares no valid config\.auth/);
    await app.close();
  });

  it('records every route with its level, and treats the swagger-ui routes as public', async () => {
    const app = await appWithAuth();
    await app.register(swagger, { openapi: { info: { title: 't', version: '1' } } });
    await app.register(swaggerUi, { routePrefix: DOCS_PREFIX });
    app.get('/a', { config: { auth: 'user' } }, async () => 'a');
    await app.register(async (child) => {
      child.post('/b', { config: { auth: 'owner' } }, async () => 'b');
    }, { prefix: '/api/v1' });
    await app.ready();
    expect(app.registeredRoutes).toContainEqual({ method: 'GET', url: '/a', auth: 'user', websocket: false });
    expect(app.registeredRoutes).toContainEqual({ method: 'POST', url: '/api/v1/b', auth: 'owner', websocket: false });
    const docs = app.registeredRoutes.filter((r) => r.url.startsWith(DOCS_PREFIX));
    expect(docs.length).toBeGreaterThan(3);
    expect(new Set(docs.map((r) => r.auth))).toEqual(new Set(['public']));
    const json = await app.inject({ method: 'GET', url: `${DOCS_PREFIX}/json` });
    expect(json.statusCode).toBe(200);
    await app.close();
  });

  it('does not let a domain route under /api/docs skip the check', async () => {
    const app = await appWithAuth();
    expect(() => app.get('/api/docs/sneaky', async () => 'x')).toThrow(/declares no valid config\.auth/);
    await app.close();
  });
});
