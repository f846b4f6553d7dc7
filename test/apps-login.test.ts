import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../server/auth/passwords.ts';
import { createLocalRevocationBus } from '../server/auth/revocations.ts';
import { createSession, SESSION_COOKIE } from '../server/auth/sessions.ts';
import { appAuthorizePath } from '../server/apps/return-target.ts';
import { systemClock } from '../server/store/time.ts';
import { updateUser } from '../server/users/users.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { idleDriver } from './support/idle-driver.ts';
import { seedWorkspace, type SeededWorkspace } from './support/workspace-seed.ts';

/**
 * Signing in to an app host from a browser that is not signed in to den (docs/apps.md): den's
 * sign-in page and the way back to the app, which den checks (no open redirect), and signing out
 * of den ending the app hosts' cookies. In-process requests; the app is never reached (no agent).
 */

const PASSWORD = 'correct horse battery';
const APP_HOST = '8080--dev--alice.localtest';

describe('app sign-in through den\'s sign-in page', () => {
  let server: TestServer;
  let alice: SeededWorkspace;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'den-apps-login-'));
    server = await startTestServer({ dataDir, startWorkers: false, driver: () => idleDriver, config: { appsWildcardDomain: 'localtest', accessUrl: 'https://den.example.com' } });
    alice = await seedWorkspace(server.store.db, { username: 'alice', workspaceName: 'dev' });
    await server.store.db.updateTable('users').set({ password_hash: await hashPassword(PASSWORD) }).where('id', '=', alice.userId).execute();
  });

  afterAll(async () => {
    await server?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const login = (body: Record<string, unknown>) => server.app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { username: 'alice', password: PASSWORD, ...body } });

  /** A request to an app host, as the browser sends it to den. */
  const onAppHost = (path: string, cookie?: string) => server.app.inject({ method: 'GET', url: path, headers: { host: APP_HOST, ...(cookie ? { cookie } : {}) } });

  /** The app host's cookie, through den's authorize step with a den session and the code exchange. */
  async function appCookie(session: string): Promise<string> {
    const authorize = await server.app.inject({ method: 'GET', url: appAuthorizePath(APP_HOST, '/'), headers: { cookie: `${SESSION_COOKIE}=${session}` } });
    expect(authorize.statusCode, authorize.body).toBe(302);
    const back = new URL(authorize.headers.location!);
    const exchanged = await onAppHost(`${back.pathname}${back.search}`);
    expect(exchanged.statusCode, exchanged.body).toBe(302);
    return String(exchanged.headers['set-cookie']).split(';')[0];
  }

  it('sends a browser without a den session from the authorize step to den\'s sign-in page, which knows the way back', async () => {
    // the app host without its cookie: to den's authorize step, which has no session either
    const app = await onAppHost('/src/?q=1');
    expect(app.statusCode).toBe(302);
    const authorize = new URL(app.headers.location!);
    expect(authorize.origin).toBe('https://den.example.com');
    const response = await server.app.inject({ method: 'GET', url: `${authorize.pathname}${authorize.search}` });
    expect(response.statusCode).toBe(302);
    const signIn = new URL(response.headers.location!);
    expect(`${signIn.origin}${signIn.pathname}`).toBe('https://den.example.com/login');
    expect(signIn.searchParams.get('next')).toBe(appAuthorizePath(APP_HOST, '/src/?q=1'));
  });

  it('sends a browser page without a den session from a path-mode app to den\'s sign-in page; a script gets 401', async () => {
    const page = await server.app.inject({ method: 'GET', url: '/@alice/dev/ports/8080/src/?q=1', headers: { accept: 'text/html,application/xhtml+xml' } });
    expect(page.statusCode).toBe(302);
    const signIn = new URL(page.headers.location!);
    expect(`${signIn.origin}${signIn.pathname}`).toBe('https://den.example.com/login');
    expect(signIn.searchParams.get('next')).toBe('/@alice/dev/ports/8080/src/?q=1');
    expect((await server.app.inject({ method: 'GET', url: '/@alice/dev/ports/8080/src/', headers: { accept: '*/*' } })).statusCode).toBe(401);
    expect((await server.app.inject({ method: 'POST', url: '/@alice/dev/ports/8080/src/', headers: { accept: 'text/html' } })).statusCode).toBe(401);
  });

  it('answers a password sign-in with the way back to the app, only when it leads to an app of this den', async () => {
    const next = appAuthorizePath(APP_HOST, '/src/');
    const back = await login({ next });
    expect(back.statusCode).toBe(200);
    expect(back.json()).toMatchObject({ user: { username: 'alice' }, next });
    expect((await login({ next: '/@alice/dev/apps/web/' })).json().next).toBe('/@alice/dev/apps/web/');

    for (const attempt of [
      'https://evil.example/',
      `https://evil.example${next}`,
      '//evil.example/',
      '/\\evil.example/',
      'javascript:alert(document.cookie)',
      `https://other-den.example.com${next}`,
      appAuthorizePath('evil.example', '/'),
      // an app address longer than den goes back to: dropped, not a failed sign-in
      `/@alice/dev/apps/web/?q=${'x'.repeat(5000)}`,
    ]) {
      const refused = await login({ next: attempt });
      // signed in all the same, to the dashboard: the attacker learns nothing more
      expect(refused.statusCode, attempt).toBe(200);
      expect(refused.json(), attempt).not.toHaveProperty('next');
      expect(String(refused.headers['set-cookie']), attempt).toContain(`${SESSION_COOKIE}=`);
    }
    // the CLI asks for a token, and has no browser to send anywhere
    expect((await login({ next, token: { name: 'cli' } })).json()).not.toHaveProperty('next');
  });

  it('ends the app hosts\' cookies of a user who signs out of den', async () => {
    const session = await createSession(server.store.db, systemClock, alice.userId, 1);
    const cookie = await appCookie(session.cookieValue);
    // the cookie lets the request through to the app (whose workspace has no agent here)
    expect((await onAppHost('/', cookie)).statusCode).toBe(409);

    const logout = await server.app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: { cookie: `${SESSION_COOKIE}=${session.cookieValue}`, 'x-csrf-token': session.csrfToken } });
    expect(logout.statusCode, logout.body).toBe(200);
    const after = await onAppHost('/', cookie);
    expect(after.statusCode).toBe(302);
    expect(new URL(after.headers.location!).pathname).toBe('/api/v1/apps/authorize');
  });

  it('ends the app hosts\' cookies of a user whose password changes', async () => {
    const session = await createSession(server.store.db, systemClock, alice.userId, 1);
    const cookie = await appCookie(session.cookieValue);
    expect((await onAppHost('/', cookie)).statusCode).toBe(409);
    await updateUser(server.store, systemClock, createLocalRevocationBus(), 'alice', { password: `${PASSWORD} again` });
    expect((await onAppHost('/', cookie)).statusCode).toBe(302);
  });
});
