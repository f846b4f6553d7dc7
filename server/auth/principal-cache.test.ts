import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, storeDialects } from '../../test/support/postgres.ts';
import { openStore, type Store } from '../store/connect.ts';
import { iso, type Clock } from '../store/time.ts';
import { createFirstUser, createUser, updateUser } from '../users/users.ts';
import { createApiToken, listApiTokens, revokeApiToken } from './api-tokens.ts';
import { authenticate } from './authenticate.ts';
import { CACHE_TTL_MS } from './principal-cache.ts';
import { createLocalRevocationBus } from './revocations.ts';
import { createSession, deleteSession } from './sessions.ts';
import { hashSecret } from './secrets.ts';

const PASSWORD = 'correct-horse-battery';
// domain calls announce what they revoke; this process's bus also clears the principal cache
const revocations = createLocalRevocationBus();

function testClock(start = Date.parse('2026-01-01T00:00:00Z')): Clock & { advance(ms: number): void } {
  let now = start;
  return { now: () => new Date(now), advance: (ms) => { now += ms; } };
}

describe.each(storeDialects)('cached authentication on %s', (dialect) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  let clock: ReturnType<typeof testClock>;

  beforeEach(async () => {
    if (dialect === 'postgres') {
      const database = await createTestDatabase();
      store = await openStore({ databaseUrl: database.url });
      cleanup = () => database.drop();
    } else {
      const dir = mkdtempSync(join(tmpdir(), 'den-auth-cache-'));
      store = await openStore({ sqlitePath: join(dir, 'den.sqlite') });
      cleanup = async () => rmSync(dir, { recursive: true, force: true });
    }
    clock = testClock();
    await createFirstUser(store, clock, { username: 'alice', password: PASSWORD });
  });

  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

  it('applies a change made elsewhere (another replica) within the cache TTL', async () => {
    const bob = await createUser(store.db, clock, { username: 'bob', password: PASSWORD, role: 'member' });
    const { token } = await createApiToken(store.db, clock, bob.id, { name: 'cli' });
    expect((await authenticate({ db: store.db, clock }, bearer(token)))?.principal.role).toBe('member');
    // Written straight to the store, as another replica would: this process is not told.
    await store.db.updateTable('users').set({ role: 'template-admin' }).where('id', '=', bob.id).execute();
    clock.advance(CACHE_TTL_MS - 1);
    expect((await authenticate({ db: store.db, clock }, bearer(token)))?.principal.role).toBe('member');
    clock.advance(1);
    expect((await authenticate({ db: store.db, clock }, bearer(token)))?.principal.role).toBe('template-admin');
  });

  it('refuses at once what this process revoked, suspended or logged out', async () => {
    const bob = await createUser(store.db, clock, { username: 'bob', password: PASSWORD, role: 'member' });
    const first = await createApiToken(store.db, clock, bob.id, { name: 'one' });
    const second = await createApiToken(store.db, clock, bob.id, { name: 'two' });
    const session = await createSession(store.db, clock, bob.id, 1);
    for (const credentials of [bearer(first.token), bearer(second.token), { sessionCookie: session.cookieValue }]) {
      expect(await authenticate({ db: store.db, clock }, credentials)).not.toBeNull();
    }
    await revokeApiToken(store.db, clock, revocations, bob.id, first.id);
    await expect(authenticate({ db: store.db, clock }, bearer(first.token))).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
    await deleteSession(store.db, revocations, { userId: bob.id, idHash: hashSecret(session.cookieValue) });
    await expect(authenticate({ db: store.db, clock }, { sessionCookie: session.cookieValue })).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
    await updateUser(store, clock, revocations, 'bob', { suspended: true });
    await expect(authenticate({ db: store.db, clock }, bearer(second.token))).rejects.toMatchObject({ code: 'USER_SUSPENDED' });
  });

  it('forgets at once what a shared bus announces, even when this process did not make the change', async () => {
    const bob = await createUser(store.db, clock, { username: 'bob', password: PASSWORD, role: 'member' });
    const created = await createApiToken(store.db, clock, bob.id, { name: 'cli' });
    expect(await authenticate({ db: store.db, clock }, bearer(created.token))).not.toBeNull();
    // Another replica revoked the token and announced it: only the bus tells this process.
    await store.db.updateTable('api_tokens').set({ revoked_at: iso(clock.now()) }).where('id', '=', created.id).execute();
    expect(await authenticate({ db: store.db, clock }, bearer(created.token))).not.toBeNull();
    revocations.publish({ kind: 'token', userId: bob.id, tokenId: created.id });
    await expect(authenticate({ db: store.db, clock }, bearer(created.token))).rejects.toMatchObject({ code: 'UNAUTHENTICATED' });
  });

  it('checks token expiry on every request, cached or not', async () => {
    const alice = await store.db.selectFrom('users').select('id').where('username', '=', 'alice').executeTakeFirstOrThrow();
    const created = await createApiToken(store.db, clock, alice.id, { name: 'short', expiresInDays: 1 });
    clock.advance(86_400_000 - 2_000);
    expect(await authenticate({ db: store.db, clock }, bearer(created.token))).not.toBeNull();
    clock.advance(2_000); // within the TTL of the entry just cached, and at the token's expiry
    await expect(authenticate({ db: store.db, clock }, bearer(created.token))).rejects.toMatchObject({ code: 'TOKEN_EXPIRED' });
  });

  it('records a cached token\'s use again after the last-used interval', async () => {
    const alice = await store.db.selectFrom('users').select('id').where('username', '=', 'alice').executeTakeFirstOrThrow();
    const created = await createApiToken(store.db, clock, alice.id, { name: 'cli' });
    const lastUsed = async () => (await listApiTokens(store.db, alice.id))[0].lastUsedAt;
    await authenticate({ db: store.db, clock }, bearer(created.token));
    const firstUse = iso(clock.now());
    clock.advance(59_000); // read from the store again (past the TTL), not yet due
    await authenticate({ db: store.db, clock }, bearer(created.token));
    expect(await lastUsed()).toBe(firstUse);
    clock.advance(2_000); // a cache hit, and a minute since the last write
    await authenticate({ db: store.db, clock }, bearer(created.token));
    expect(await lastUsed()).toBe(iso(clock.now()));
  });
});
