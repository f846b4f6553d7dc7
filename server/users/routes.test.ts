import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/support/harness.ts';
import { storeDialects } from '../../test/support/postgres.ts';
import { api, createUserWithToken, loginForToken, setupOwner, TEST_PASSWORD, type TestUser } from '../../test/support/users.ts';

const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA7cbKUkBbY95yrme7Fp77n3ZJ/2ghf7Pq8LB3BKmj+B alice@laptop';

function expectError(response: { status: number; json: any }, status: number, code: string): void {
  expect({ status: response.status, code: response.json?.error?.code }).toEqual({ status, code });
  expect(response.json.error.message).toMatch(/^[A-Z].*\.$/);
}

describe.each(storeDialects)('users, tokens and SSH keys over HTTP on %s', (dialect) => {
  let server: TestServer;
  let owner: TestUser;
  let member: TestUser;

  beforeAll(async () => {
    server = await startTestServer({ dialect, startWorkers: false });
    owner = await setupOwner(server.app);
    member = await createUserWithToken(server.app, owner.token, 'member', 'mia');
  });
  afterAll(async () => {
    await server?.close();
  });

  describe('user management', () => {
    it('lets the owner create, show, list, change and delete users', async () => {
      const asOwner = api(server.app, owner.token);
      const created = await asOwner.post('/api/v1/users', { username: 'tad', password: TEST_PASSWORD, role: 'template-admin', displayName: 'Tad' });
      expect(created.status).toBe(201);
      expect(created.json).toMatchObject({ username: 'tad', role: 'template-admin', displayName: 'Tad', suspended: false });
      expect(created.json).not.toHaveProperty('passwordHash');

      expect((await asOwner.get('/api/v1/users/tad')).json.id).toBe(created.json.id);
      expect((await asOwner.get('/api/v1/users')).json.users.map((u: { username: string }) => u.username)).toEqual(expect.arrayContaining(['owner', 'mia', 'tad']));
      expect((await asOwner.patch('/api/v1/users/tad', { role: 'member' })).json.role).toBe('member');
      expect((await asOwner.delete('/api/v1/users/tad')).json).toEqual({ ok: true });
      expectError(await asOwner.get('/api/v1/users/tad'), 404, 'USER_NOT_FOUND');
    });

    it('refuses user management to members with 403 FORBIDDEN and to anonymous callers with 401', async () => {
      expectError(await api(server.app, member.token).get('/api/v1/users'), 403, 'FORBIDDEN');
      expectError(await api(server.app, member.token).post('/api/v1/users', { username: 'x', password: TEST_PASSWORD }), 403, 'FORBIDDEN');
      expectError(await api(server.app).get('/api/v1/users'), 401, 'UNAUTHENTICATED');
    });

    it('refuses usernames that are not DNS-safe, the reserved name "me", and duplicates', async () => {
      const asOwner = api(server.app, owner.token);
      const bad = await asOwner.post('/api/v1/users', { username: 'Bad_Name', password: TEST_PASSWORD });
      expectError(bad, 400, 'VALIDATION_FAILED');
      expect(bad.json.error.message).toContain('body.username must use lowercase letters, digits and inner dashes only');
      expectError(await asOwner.post('/api/v1/users', { username: 'me', password: TEST_PASSWORD }), 400, 'VALIDATION_FAILED');
      expectError(await asOwner.post('/api/v1/users', { username: 'mia', password: TEST_PASSWORD }), 409, 'USER_EXISTS');
    });

    it('refuses to demote or delete the last owner with 409 LAST_OWNER', async () => {
      const asOwner = api(server.app, owner.token);
      expectError(await asOwner.patch('/api/v1/users/owner', { role: 'member' }), 409, 'LAST_OWNER');
      expectError(await asOwner.patch('/api/v1/users/owner', { suspended: true }), 409, 'LAST_OWNER');
      expectError(await asOwner.delete('/api/v1/users/owner'), 409, 'LAST_OWNER');
      expect((await asOwner.get('/api/v1/users/me')).json.role).toBe('owner');
    });

    it('applies a role change to the next request of that user', async () => {
      const user = await createUserWithToken(server.app, owner.token, 'member', 'promoted');
      expectError(await api(server.app, user.token).get('/api/v1/users'), 403, 'FORBIDDEN');
      await api(server.app, owner.token).patch('/api/v1/users/promoted', { role: 'owner' });
      expect((await api(server.app, user.token).get('/api/v1/users')).status).toBe(200);
    });

    it('changes a password so only the new one signs in', async () => {
      await createUserWithToken(server.app, owner.token, 'member', 'rotator');
      await api(server.app, owner.token).patch('/api/v1/users/rotator', { password: 'a-brand-new-password' });
      expectError(await api(server.app).post('/api/v1/auth/login', { username: 'rotator', password: TEST_PASSWORD }), 401, 'INVALID_CREDENTIALS');
      expect(await loginForToken(server.app, 'rotator', 'a-brand-new-password')).toMatch(/^den_/);
    });
  });

  describe('API tokens', () => {
    it('lists tokens without their secrets, and revokes only the caller\'s own', async () => {
      const asMember = api(server.app, member.token);
      const created = await asMember.post('/api/v1/users/me/tokens', { name: 'ci', expiresInDays: 7 });
      expect(created.status).toBe(201);
      expect(created.json.token).toMatch(/^den_/);

      const listed = await asMember.get('/api/v1/users/me/tokens');
      expect(listed.json.tokens.map((t: { name: string }) => t.name)).toEqual(expect.arrayContaining(['test', 'ci']));
      expect(JSON.stringify(listed.json)).not.toContain(created.json.token);
      for (const token of listed.json.tokens) expect(Object.keys(token).sort()).toEqual(['createdAt', 'expiresAt', 'id', 'lastUsedAt', 'name']);

      // the owner cannot revoke another user's token through /users/me
      expectError(await api(server.app, owner.token).delete(`/api/v1/users/me/tokens/${created.json.id}`), 404, 'TOKEN_NOT_FOUND');
      expect((await asMember.delete(`/api/v1/users/me/tokens/${created.json.id}`)).status).toBe(200);
      expectError(await asMember.delete(`/api/v1/users/me/tokens/${created.json.id}`), 404, 'TOKEN_NOT_FOUND');
    });

    it('refuses a token without a name', async () => {
      expectError(await api(server.app, member.token).post('/api/v1/users/me/tokens', { name: ' ' }), 400, 'VALIDATION_FAILED');
    });
  });

  describe('SSH keys', () => {
    it('adds a key with its OpenSSH fingerprint, lists and deletes it', async () => {
      const asMember = api(server.app, member.token);
      const added = await asMember.post('/api/v1/users/me/keys', { publicKey: ED25519 });
      expect(added.status).toBe(201);
      expect(added.json).toMatchObject({
        name: 'alice@laptop',
        type: 'ssh-ed25519',
        fingerprint: 'SHA256:lR1o8oBcQXpCYbY6RIiBzB8eWBgcmq3XHdgkE/JCfEs',
        publicKey: ED25519.split(' ').slice(0, 2).join(' '),
      });
      expect((await asMember.get('/api/v1/users/me/keys')).json.keys).toHaveLength(1);
      expectError(await api(server.app, owner.token).post('/api/v1/users/me/keys', { publicKey: ED25519 }), 409, 'SSH_KEY_EXISTS');
      expectError(await api(server.app, owner.token).delete(`/api/v1/users/me/keys/${added.json.id}`), 404, 'SSH_KEY_NOT_FOUND');
      expect((await asMember.delete(`/api/v1/users/me/keys/${added.json.id}`)).status).toBe(200);
      expect((await asMember.get('/api/v1/users/me/keys')).json.keys).toEqual([]);
    });

    it('refuses garbage with 400 SSH_KEY_INVALID and a sentence', async () => {
      const garbage = await api(server.app, member.token).post('/api/v1/users/me/keys', { publicKey: 'ssh-ed25519 AAAA-not-a-key' });
      expectError(garbage, 400, 'SSH_KEY_INVALID');
      expect(garbage.json.error.message).toBe('The SSH public key could not be read. The key data is not base64.');
    });
  });
});
