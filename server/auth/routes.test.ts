import type { IncomingMessage } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startTestServer, type TestServer } from '../../test/support/harness.ts';
import { storeDialects } from '../../test/support/postgres.ts';
import { api, createUserWithToken, loginForToken, loginWithCookie, setupOwner, TEST_PASSWORD, type TestUser } from '../../test/support/users.ts';
import { resolvePrincipalFromRaw } from './plugin.ts';
import { FREE_FAILURES } from './login-limits.ts';

/** A clock the test moves by hand, for token expiry. */
function testClock() {
  let now = Date.now();
  return { now: () => new Date(now), advance: (ms: number) => { now += ms; } };
}

function expectError(response: { status: number; json: any }, status: number, code: string): void {
  expect({ status: response.status, code: response.json?.error?.code }).toEqual({ status, code });
  expect(response.json.error.message).toMatch(/^[A-Z].*\.$/);
}

describe.each(storeDialects)('accounts over HTTP on %s', (dialect) => {
  let server: TestServer;
  let owner: TestUser;
  const clock = testClock();

  beforeAll(async () => {
    server = await startTestServer({ dialect, startWorkers: false, clock });
  });
  afterAll(async () => {
    await server?.close();
  });

  describe('first-user setup', () => {
    it('reports that setup is required, refuses a short password with a sentence, then creates the owner once', async () => {
      const anonymous = api(server.app);
      expect((await anonymous.get('/api/v1/setup')).json).toEqual({ setupRequired: true });

      const short = await anonymous.post('/api/v1/setup/first-user', { username: 'owner', password: 'short' });
      expectError(short, 400, 'VALIDATION_FAILED');
      expect(short.json.error.message).toBe('The request is invalid: body.password must be at least 8 characters long; choose a longer password. Fix it and try again.');

      owner = await setupOwner(server.app);
      expect((await anonymous.get('/api/v1/setup')).json).toEqual({ setupRequired: false });
      const me = await api(server.app, owner.token).get('/api/v1/users/me');
      expect(me.json).toMatchObject({ username: 'owner', role: 'owner', authenticatedVia: 'token', suspended: false });
      expect(me.json).not.toHaveProperty('csrfToken');
    });

    it('answers a second first-user attempt with 409 FIRST_USER_EXISTS', async () => {
      const again = await api(server.app).post('/api/v1/setup/first-user', { username: 'intruder', password: TEST_PASSWORD });
      expectError(again, 409, 'FIRST_USER_EXISTS');
    });
  });

  describe('login and tokens', () => {
    it('refuses a wrong password and an unknown user alike with 401 INVALID_CREDENTIALS', async () => {
      expectError(await api(server.app).post('/api/v1/auth/login', { username: 'owner', password: 'wrong-password' }), 401, 'INVALID_CREDENTIALS');
      expectError(await api(server.app).post('/api/v1/auth/login', { username: 'nobody', password: 'wrong-password' }), 401, 'INVALID_CREDENTIALS');
    });

    it('returns a new API token when the login asks for one, and sets no cookie', async () => {
      const login = await api(server.app).post('/api/v1/auth/login', { username: 'owner', password: TEST_PASSWORD, token: { name: 'cli', expiresInDays: 30 } });
      expect(login.status).toBe(200);
      expect(login.headers['set-cookie']).toBeUndefined();
      expect(login.json.token).toMatchObject({ name: 'cli', lastUsedAt: null });
      expect(login.json.token.token).toMatch(/^den_[A-Za-z0-9_-]{43}$/);
      expect((await api(server.app, login.json.token.token).get('/api/v1/users/me')).status).toBe(200);
    });

    it('refuses missing, unknown, malformed and revoked tokens with 401 UNAUTHENTICATED', async () => {
      expectError(await api(server.app).get('/api/v1/users/me'), 401, 'UNAUTHENTICATED');
      expectError(await api(server.app, 'den_not-a-real-token').get('/api/v1/users/me'), 401, 'UNAUTHENTICATED');
      expectError(await api(server.app).get('/api/v1/users/me', { authorization: 'Basic b3duZXI6cGFzcw==' }), 401, 'UNAUTHENTICATED');

      const login = await api(server.app).post('/api/v1/auth/login', { username: 'owner', password: TEST_PASSWORD, token: { name: 'to-revoke' } });
      const { id, token } = login.json.token;
      expect((await api(server.app, token).get('/api/v1/users/me')).status).toBe(200);
      expect((await api(server.app, owner.token).delete(`/api/v1/users/me/tokens/${id}`)).status).toBe(200);
      expectError(await api(server.app, token).get('/api/v1/users/me'), 401, 'UNAUTHENTICATED');
      const listed = await api(server.app, owner.token).get('/api/v1/users/me/tokens');
      expect(listed.json.tokens.map((t: { id: string }) => t.id)).not.toContain(id);
    });

    it('refuses an expired token with 401 TOKEN_EXPIRED', async () => {
      const created = await api(server.app, owner.token).post('/api/v1/users/me/tokens', { name: 'short', expiresInDays: 1 });
      expect(created.status).toBe(201);
      expect((await api(server.app, created.json.token).get('/api/v1/users/me')).status).toBe(200);
      clock.advance(86_400_000 + 1);
      expectError(await api(server.app, created.json.token).get('/api/v1/users/me'), 401, 'TOKEN_EXPIRED');
    });

    it('keeps an account open after failed logins: the right password still signs in (the limits are in login-limits.test.ts)', async () => {
      const anonymous = api(server.app);
      await api(server.app, owner.token).post('/api/v1/users', { username: 'mistyped', password: TEST_PASSWORD });
      for (let i = 0; i <= FREE_FAILURES; i++) {
        expectError(await anonymous.post('/api/v1/auth/login', { username: 'mistyped', password: 'wrong-password' }), 401, 'INVALID_CREDENTIALS');
      }
      expect((await anonymous.post('/api/v1/auth/login', { username: 'mistyped', password: TEST_PASSWORD })).status).toBe(200);
    });

    it('logs out a token by revoking it', async () => {
      const token = await loginForToken(server.app, 'owner');
      expect((await api(server.app, token).post('/api/v1/auth/logout')).json).toEqual({ ok: true });
      expectError(await api(server.app, token).get('/api/v1/users/me'), 401, 'UNAUTHENTICATED');
      expect((await api(server.app, owner.token).get('/api/v1/users/me')).status).toBe(200);
    });
  });

  describe('cookie sessions', () => {
    // its own user: failed logins elsewhere in this file slow down the owner's
    beforeAll(async () => {
      await api(server.app, owner.token).post('/api/v1/users', { username: 'browser', password: TEST_PASSWORD });
    });

    it('sets an HTTP-only SameSite=Lax session cookie without Secure on an http access URL', async () => {
      const { setCookie } = await loginWithCookie(server.app, 'browser');
      expect(setCookie).toMatch(/^den_session=[A-Za-z0-9_-]{43};/);
      expect(setCookie).toContain('HttpOnly');
      expect(setCookie).toContain('SameSite=Lax');
      expect(setCookie).toContain('Path=/');
      expect(setCookie).not.toContain('Secure');
    });

    it('returns the CSRF token with the user, and requires it on cookie-authenticated writes', async () => {
      const { cookie, csrfToken } = await loginWithCookie(server.app, 'browser');
      const me = await api(server.app).get('/api/v1/users/me', { cookie });
      expect(me.json).toMatchObject({ username: 'browser', authenticatedVia: 'session', csrfToken });

      const missing = await api(server.app).post('/api/v1/users/me/tokens', { name: 'x' }, { cookie });
      expectError(missing, 403, 'CSRF_FAILED');
      const wrong = await api(server.app).post('/api/v1/users/me/tokens', { name: 'x' }, { cookie, 'x-csrf-token': `${csrfToken}x` });
      expectError(wrong, 403, 'CSRF_FAILED');
      const right = await api(server.app).post('/api/v1/users/me/tokens', { name: 'x' }, { cookie, 'x-csrf-token': csrfToken });
      expect(right.status).toBe(201);
      // token requests carry no ambient credentials and need no CSRF token
      expect((await api(server.app, owner.token).post('/api/v1/users/me/tokens', { name: 'y' })).status).toBe(201);
    });

    it('prefers a presented Bearer token over the cookie and never falls back when the token is bad', async () => {
      const { cookie } = await loginWithCookie(server.app, 'browser');
      expectError(await api(server.app, 'den_bogus').get('/api/v1/users/me', { cookie }), 401, 'UNAUTHENTICATED');
    });

    it('refuses a cookie-authenticated websocket upgrade from another origin with CSRF_FAILED', async () => {
      const { cookie } = await loginWithCookie(server.app, 'browser');
      const upgrade = { cookie, connection: 'Upgrade', upgrade: 'websocket' };
      expectError(await api(server.app).get('/api/v1/users/me', { ...upgrade, origin: 'https://evil.example' }), 403, 'CSRF_FAILED');
      expectError(await api(server.app).get('/api/v1/users/me', upgrade), 403, 'CSRF_FAILED');
      const same = await api(server.app).get('/api/v1/users/me', { ...upgrade, origin: new URL(server.config.accessUrl).origin });
      expect(same.status).toBe(200);
    });

    it('ends the session on logout (with the CSRF token) and clears the cookie', async () => {
      const { cookie, csrfToken } = await loginWithCookie(server.app, 'browser');
      expectError(await api(server.app).post('/api/v1/auth/logout', {}, { cookie }), 403, 'CSRF_FAILED');
      const out = await api(server.app).post('/api/v1/auth/logout', {}, { cookie, 'x-csrf-token': csrfToken });
      expect(out.status).toBe(200);
      expect(String(out.headers['set-cookie'])).toMatch(/^den_session=;/);
      expectError(await api(server.app).get('/api/v1/users/me', { cookie }), 401, 'UNAUTHENTICATED');
    });
  });

  describe('resolving a principal from a raw request (websocket endpoints outside routing)', () => {
    it('returns the principal of a token, null for no credentials, and refuses a cookie upgrade from another origin', async () => {
      const raw = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage;
      expect(await resolvePrincipalFromRaw(server.den, raw({ authorization: `Bearer ${owner.token}` }))).toMatchObject({ username: 'owner', via: 'token' });
      expect(await resolvePrincipalFromRaw(server.den, raw({}))).toBeNull();
      const { cookie } = await loginWithCookie(server.app, 'browser');
      const upgrade = { cookie, upgrade: 'websocket', connection: 'Upgrade' };
      await expect(resolvePrincipalFromRaw(server.den, raw({ ...upgrade, origin: 'https://evil.example' }))).rejects.toMatchObject({ code: 'CSRF_FAILED' });
      expect(await resolvePrincipalFromRaw(server.den, raw({ ...upgrade, origin: new URL(server.config.accessUrl).origin }))).toMatchObject({ username: 'browser', via: 'session' });
      await expect(resolvePrincipalFromRaw(server.den, raw({ authorization: 'Bearer den_nope' }))).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
    });
  });

  describe('suspended users', () => {
    it('refuses the login, the tokens and the sessions of a suspended user with USER_SUSPENDED', async () => {
      const user = await createUserWithToken(server.app, owner.token, 'member', 'suspendee');
      const { cookie } = await loginWithCookie(server.app, user.username);
      const suspend = await api(server.app, owner.token).patch(`/api/v1/users/${user.username}`, { suspended: true });
      expect(suspend.json).toMatchObject({ suspended: true });

      expectError(await api(server.app, user.token).get('/api/v1/users/me'), 403, 'USER_SUSPENDED');
      expectError(await api(server.app).get('/api/v1/users/me', { cookie }), 401, 'UNAUTHENTICATED');
      expectError(await api(server.app).post('/api/v1/auth/login', { username: user.username, password: TEST_PASSWORD }), 403, 'USER_SUSPENDED');

      await api(server.app, owner.token).patch(`/api/v1/users/${user.username}`, { suspended: false });
      expect((await api(server.app, user.token).get('/api/v1/users/me')).status).toBe(200);
    });
  });
});

describe('cookies behind an https access URL', () => {
  it('marks the session cookie Secure', async () => {
    const server = await startTestServer({ startWorkers: false, config: { accessUrl: 'https://den.example.com' } });
    try {
      await setupOwner(server.app);
      const { setCookie } = await loginWithCookie(server.app, 'owner');
      expect(setCookie).toContain('Secure');
    } finally {
      await server.close();
    }
  });
});

describe('websocket upgrades on a listening server', () => {
  it('refuses a real cookie-authenticated upgrade from another origin with 403 before any socket opens', async () => {
    const server = await startTestServer({ startWorkers: false, listen: true });
    try {
      await setupOwner(server.app);
      const { cookie } = await loginWithCookie(server.app, 'owner');
      const url = `${server.url!.replace(/^http/, 'ws')}/api/v1/users/me`;
      const status = await new Promise<number>((resolve, reject) => {
        const socket = new WebSocket(url, { headers: { cookie, origin: 'https://evil.example' } });
        socket.on('unexpected-response', (_request, response) => {
          resolve(response.statusCode ?? 0);
          socket.terminate();
        });
        socket.on('open', () => reject(new Error('the upgrade was accepted')));
        socket.on('error', reject);
      });
      expect(status).toBe(403);
    } finally {
      await server.close();
    }
  });
});
