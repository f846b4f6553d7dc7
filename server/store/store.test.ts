import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AppError, type ErrorCode } from '../../protocol/errors.ts';
import { createApiToken, listApiTokens, revokeApiToken } from '../auth/api-tokens.ts';
import { authenticate } from '../auth/authenticate.ts';
import { createSession } from '../auth/sessions.ts';
import { createLocalRevocationBus } from '../auth/revocations.ts';
import { addSshKey, deleteSshKey, findUserBySshFingerprint, listSshKeys } from '../users/ssh-keys.ts';
import { isUniqueViolation } from './unique.ts';
import { createFirstUser, createUser, deleteUser, getUser, isSetupRequired, listUsers, updateUser } from '../users/users.ts';
import { createTestDatabase, storeDialects } from '../../test/support/postgres.ts';
import { openStore, type Store, type StoreOptions } from './connect.ts';
import { iso, type Clock } from './time.ts';

const ED25519 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA7cbKUkBbY95yrme7Fp77n3ZJ/2ghf7Pq8LB3BKmj+B laptop';
const PASSWORD = 'correct-horse-battery';
// domain calls announce what they revoke; this process's bus also clears the principal cache
const revocations = createLocalRevocationBus();

/** A clock the test moves by hand, for expiries. */
function testClock(start = Date.parse('2026-01-01T00:00:00Z')): Clock & { advance(ms: number): void } {
  let now = start;
  return { now: () => new Date(now), advance: (ms) => { now += ms; } };
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<AppError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error, `expected ${code}`).toBeInstanceOf(AppError);
  expect((error as AppError).code).toBe(code);
  expect((error as AppError).message).toMatch(/\.$/);
  return error as AppError;
}

describe.each(storeDialects)('store on %s', (dialect) => {
  let options: StoreOptions;
  let cleanup: () => Promise<void>;
  let store: Store;
  let clock: ReturnType<typeof testClock>;

  beforeEach(async () => {
    if (dialect === 'postgres') {
      const database = await createTestDatabase();
      options = { databaseUrl: database.url };
      cleanup = () => database.drop();
    } else {
      const dir = mkdtempSync(join(tmpdir(), 'den-store-'));
      options = { sqlitePath: join(dir, 'den.sqlite') };
      cleanup = async () => rmSync(dir, { recursive: true, force: true });
    }
    store = await openStore(options);
    clock = testClock();
  });

  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  it('runs the migrations again on an existing database without changing it', async () => {
    const before = (await store.db.introspection.getTables()).map((t) => t.name).sort();
    store = await reopen(store, options);
    const after = (await store.db.introspection.getTables()).map((t) => t.name).sort();
    expect(after).toEqual(before);
    expect(after).toEqual(expect.arrayContaining(['users', 'sessions', 'api_tokens', 'ssh_keys', 'workspaces', 'builds']));
    const applied = await sql<{ name: string }>`select name from kysely_migration`.execute(store.db);
    expect(applied.rows.map((r) => r.name)).toEqual(['0001_initial', '0002_list_generation', '0003_workspace_events', '0004_reconcile', '0005_build_cancel', '0006_agents', '0007_replicas', '0009_ssh_gateway', '0013_app_tokens', '0015_environment_runs', '0016_app_health', '0018_groups']);
  });

  it('creates exactly one owner when several first-user setups race', async () => {
    expect(await isSetupRequired(store.db)).toBe(true);
    const results = await Promise.allSettled(
      ['alice', 'bob', 'carol', 'dave'].map((username) => createFirstUser(store, clock, { username, password: PASSWORD })),
    );
    const created = results.filter((r) => r.status === 'fulfilled');
    expect(created).toHaveLength(1);
    for (const result of results.filter((r) => r.status === 'rejected')) {
      expect((result as PromiseRejectedResult).reason).toMatchObject({ code: 'FIRST_USER_EXISTS' });
    }
    const users = await listUsers(store.db);
    expect(users).toHaveLength(1);
    expect(users[0].role).toBe('owner');
    expect(await isSetupRequired(store.db)).toBe(false);
  });

  // PostgreSQL only: SQLite serialises writers, so there is no lock to test there.
  // (not declared at all on SQLite, so no skip is reported).
  const itOnPostgres = dialect === 'postgres' ? it : ((() => undefined) as unknown as typeof it);
  itOnPostgres('holds a first-user setup until a concurrent one commits, then refuses it', async () => {
    // Deterministic version of the race above: this transaction has inserted a user but not
    // committed; without the table lock, createFirstUser would not see it and make a second owner.
    let second: Promise<string> | undefined;
    await store.db.transaction().execute(async (trx) => {
      await trx.insertInto('users').values({
        id: 'first', username: 'alice', display_name: 'alice', role: 'owner', password_hash: null,
        suspended: 0, created_at: iso(clock.now()), updated_at: iso(clock.now()),
      }).execute();
      second = createFirstUser(store, clock, { username: 'bob', password: PASSWORD }).then(
        () => 'created',
        (error: AppError) => error.code,
      );
      await waitFor('createFirstUser to wait for the users table lock', async () => {
        const waiting = await sql<{ n: number }>`
          select count(*)::int as n from pg_locks l join pg_class c on c.oid = l.relation
          where c.relname = 'users' and not l.granted`.execute(store.db);
        return waiting.rows[0].n > 0;
      });
    });
    expect(await second).toBe('FIRST_USER_EXISTS');
    expect((await listUsers(store.db)).map((u) => u.username)).toEqual(['alice']);
  });

  it('refuses a second user with the same username with USER_EXISTS', async () => {
    await createFirstUser(store, clock, { username: 'alice', password: PASSWORD });
    await createUser(store.db, clock, { username: 'bob', password: PASSWORD, role: 'member' });
    await expectCode(createUser(store.db, clock, { username: 'bob', password: PASSWORD, role: 'owner' }), 'USER_EXISTS');
  });

  it('reports unique violations of the schema the same way on both dialects', async () => {
    const user = { id: 'u1', username: 'x', display_name: 'x', role: 'member' as const, password_hash: null, suspended: 0, created_at: iso(clock.now()), updated_at: iso(clock.now()) };
    await store.db.insertInto('users').values(user).execute();
    const error = await store.db.insertInto('users').values({ ...user, id: 'u2' }).execute().then(() => undefined, (e: unknown) => e);
    expect(isUniqueViolation(error)).toBe(true);
    expect(isUniqueViolation(new Error('something else'))).toBe(false);
  });

  it('keeps one active owner: demoting, suspending or deleting the last one fails with LAST_OWNER', async () => {
    await createFirstUser(store, clock, { username: 'alice', password: PASSWORD });
    await expectCode(updateUser(store, clock, revocations, 'alice', { role: 'member' }), 'LAST_OWNER');
    await expectCode(updateUser(store, clock, revocations, 'alice', { suspended: true }), 'LAST_OWNER');
    await expectCode(deleteUser(store, revocations, 'alice'), 'LAST_OWNER');

    await createUser(store.db, clock, { username: 'bob', password: PASSWORD, role: 'owner' });
    await updateUser(store, clock, revocations, 'bob', { suspended: true });
    // a suspended owner does not count
    await expectCode(updateUser(store, clock, revocations, 'alice', { role: 'template-admin' }), 'LAST_OWNER');
    await updateUser(store, clock, revocations, 'bob', { suspended: false });
    expect((await updateUser(store, clock, revocations, 'alice', { role: 'template-admin' })).role).toBe('template-admin');
    await expectCode(deleteUser(store, revocations, 'bob'), 'LAST_OWNER');
  });

  it('creates, lists, uses and revokes API tokens; the store holds only their hash', async () => {
    const owner = await createFirstUser(store, clock, { username: 'alice', password: PASSWORD });
    const created = await createApiToken(store.db, clock, owner.id, { name: 'laptop' });
    expect(created.token).toMatch(/^den_/);
    const rows = await store.db.selectFrom('api_tokens').selectAll().execute();
    expect(JSON.stringify(rows)).not.toContain(created.token);

    const auth = await authenticate({ db: store.db, clock }, { authorization: `Bearer ${created.token}` });
    expect(auth?.principal).toEqual({ userId: owner.id, username: 'alice', role: 'owner', via: 'token', tokenId: created.id });
    const [listed] = await listApiTokens(store.db, owner.id);
    expect(listed).toEqual({ id: created.id, name: 'laptop', createdAt: created.createdAt, expiresAt: null, lastUsedAt: iso(clock.now()) });
    expect(listed).not.toHaveProperty('token');

    await revokeApiToken(store.db, clock, revocations, owner.id, created.id);
    expect(await listApiTokens(store.db, owner.id)).toEqual([]);
    await expectCode(authenticate({ db: store.db, clock }, { authorization: `Bearer ${created.token}` }), 'UNAUTHENTICATED');
    await expectCode(revokeApiToken(store.db, clock, revocations, owner.id, created.id), 'TOKEN_NOT_FOUND');
    await expectCode(authenticate({ db: store.db, clock }, { authorization: 'Bearer den_unknown' }), 'UNAUTHENTICATED');
  });

  it('refuses an API token after its expiry with TOKEN_EXPIRED', async () => {
    const owner = await createFirstUser(store, clock, { username: 'alice', password: PASSWORD });
    const created = await createApiToken(store.db, clock, owner.id, { name: 'short', expiresInDays: 1 });
    expect(created.expiresAt).toBe('2026-01-02T00:00:00.000Z');
    clock.advance(86_400_000 - 1);
    expect(await authenticate({ db: store.db, clock }, { authorization: `Bearer ${created.token}` })).not.toBeNull();
    clock.advance(1);
    await expectCode(authenticate({ db: store.db, clock }, { authorization: `Bearer ${created.token}` }), 'TOKEN_EXPIRED');
  });

  it('ends sessions at their expiry and on suspension, and refuses suspended users', async () => {
    await createFirstUser(store, clock, { username: 'alice', password: PASSWORD });
    const bob = await createUser(store.db, clock, { username: 'bob', password: PASSWORD, role: 'member' });
    const session = await createSession(store.db, clock, bob.id, 1);
    const token = await createApiToken(store.db, clock, bob.id, { name: 'cli' });
    const viaCookie = await authenticate({ db: store.db, clock }, { sessionCookie: session.cookieValue });
    expect(viaCookie?.principal.via).toBe('session');
    expect(viaCookie?.session?.csrfToken).toBe(session.csrfToken);

    await updateUser(store, clock, revocations, 'bob', { suspended: true });
    await expectCode(authenticate({ db: store.db, clock }, { sessionCookie: session.cookieValue }), 'UNAUTHENTICATED');
    await expectCode(authenticate({ db: store.db, clock }, { authorization: `Bearer ${token.token}` }), 'USER_SUSPENDED');

    await updateUser(store, clock, revocations, 'bob', { suspended: false });
    const later = await createSession(store.db, clock, bob.id, 1);
    clock.advance(3600_000);
    await expectCode(authenticate({ db: store.db, clock }, { sessionCookie: later.cookieValue }), 'UNAUTHENTICATED');
  });

  it('keeps SSH keys per user with a den-wide unique fingerprint', async () => {
    const alice = await createFirstUser(store, clock, { username: 'alice', password: PASSWORD });
    const bob = await createUser(store.db, clock, { username: 'bob', password: PASSWORD, role: 'member' });
    const key = await addSshKey(store.db, clock, alice.id, { publicKey: ED25519 });
    expect(key).toMatchObject({ name: 'laptop', type: 'ssh-ed25519', fingerprint: 'SHA256:lR1o8oBcQXpCYbY6RIiBzB8eWBgcmq3XHdgkE/JCfEs' });
    await expectCode(addSshKey(store.db, clock, alice.id, { publicKey: ED25519 }), 'SSH_KEY_EXISTS');
    await expectCode(addSshKey(store.db, clock, bob.id, { publicKey: ED25519, name: 'stolen' }), 'SSH_KEY_EXISTS');
    expect(await findUserBySshFingerprint(store.db, key.fingerprint)).toEqual({ userId: alice.id, username: 'alice', role: 'owner', keyId: key.id });
    // removing a key announces it (the SSH connections it opened end); a refused removal announces nothing
    const revocations = createLocalRevocationBus();
    const published: unknown[] = [];
    revocations.subscribe((revocation) => published.push(revocation));
    await expectCode(deleteSshKey(store.db, revocations, bob.id, key.id), 'SSH_KEY_NOT_FOUND');
    expect(published).toEqual([]);
    await deleteSshKey(store.db, revocations, alice.id, key.id);
    expect(await listSshKeys(store.db, alice.id)).toEqual([]);
    expect(published).toEqual([{ kind: 'ssh-key', userId: alice.id, keyId: key.id }]);
  });

  it('deletes a user with their sessions, tokens and keys, but not while workspaces reference them', async () => {
    const alice = await createFirstUser(store, clock, { username: 'alice', password: PASSWORD });
    const bob = await createUser(store.db, clock, { username: 'bob', password: PASSWORD, role: 'member' });
    await createApiToken(store.db, clock, bob.id, { name: 'cli' });
    await createSession(store.db, clock, bob.id, 1);
    await addSshKey(store.db, clock, bob.id, { publicKey: ED25519 });
    await deleteUser(store, revocations, 'bob');
    await expectCode(getUser(store.db, 'bob'), 'USER_NOT_FOUND');
    for (const table of ['api_tokens', 'sessions', 'ssh_keys'] as const) {
      expect(await store.db.selectFrom(table).selectAll().where('user_id', '=', bob.id).execute()).toEqual([]);
    }

    const carol = await createUser(store.db, clock, { username: 'carol', password: PASSWORD, role: 'member' });
    const { templateId, versionId } = await insertTemplate(store, alice.id);
    await insertWorkspace(store, { owner: carol.id, name: 'dev', templateId, versionId });
    await expectCode(deleteUser(store, revocations, 'carol'), 'USER_HAS_WORKSPACES');
  });

  it('allows one live workspace per owner and name, any number of deleted ones', async () => {
    const alice = await createFirstUser(store, clock, { username: 'alice', password: PASSWORD });
    const bob = await createUser(store.db, clock, { username: 'bob', password: PASSWORD, role: 'member' });
    const { templateId, versionId } = await insertTemplate(store, alice.id);
    const first = await insertWorkspace(store, { owner: alice.id, name: 'dev', templateId, versionId });
    const duplicate = await insertWorkspace(store, { owner: alice.id, name: 'dev', templateId, versionId }).then(() => undefined, (e: unknown) => e);
    expect(isUniqueViolation(duplicate)).toBe(true);
    // another owner may use the same name
    await insertWorkspace(store, { owner: bob.id, name: 'dev', templateId, versionId });
    // once deleted, the name is free again, and deleted rows never collide
    await store.db.updateTable('workspaces').set({ deleted_at: iso(clock.now()) }).where('id', '=', first).execute();
    const second = await insertWorkspace(store, { owner: alice.id, name: 'dev', templateId, versionId });
    await store.db.updateTable('workspaces').set({ deleted_at: iso(clock.now()) }).where('id', '=', second).execute();
    await insertWorkspace(store, { owner: alice.id, name: 'dev', templateId, versionId });
    const rows = await store.db.selectFrom('workspaces').select('id').where('owner_id', '=', alice.id).where('name', '=', 'dev').execute();
    expect(rows).toHaveLength(3);
  });

  it('refuses a duplicate template version number', async () => {
    const alice = await createFirstUser(store, clock, { username: 'alice', password: PASSWORD });
    const { templateId } = await insertTemplate(store, alice.id);
    const duplicate = await store.db
      .insertInto('template_versions')
      .values({ id: 'other', template_id: templateId, number: 1, spec_json: '{}', files_json: '{}', message: '', created_by: alice.id, created_at: iso(new Date()) })
      .execute()
      .then(() => undefined, (e: unknown) => e);
    expect(isUniqueViolation(duplicate)).toBe(true);
  });
});

/** How long a test waits for a database condition before failing. */
const CONDITION_TIMEOUT_MS = 10_000;

async function waitFor(what: string, condition: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + CONDITION_TIMEOUT_MS;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${CONDITION_TIMEOUT_MS} ms waiting for ${what}.`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function reopen(store: Store, options: StoreOptions): Promise<Store> {
  await store.close();
  return openStore(options);
}

/** A template with version 1, inserted directly (the template domain is not under test here). */
async function insertTemplate(store: Store, createdBy: string): Promise<{ templateId: string; versionId: string }> {
  const now = iso(new Date());
  const templateId = crypto.randomUUID();
  const versionId = crypto.randomUUID();
  await store.db.insertInto('templates').values({
    id: templateId, name: `t-${templateId.slice(0, 8)}`, display_name: 'T', description: '', icon: null,
    active_version_id: versionId, created_by: createdBy, created_at: now, updated_at: now,
  }).execute();
  await store.db.insertInto('template_versions').values({
    id: versionId, template_id: templateId, number: 1, spec_json: '{}', files_json: '{}', message: '', created_by: createdBy, created_at: now,
  }).execute();
  return { templateId, versionId };
}

async function insertWorkspace(
  store: Store,
  input: { owner: string; name: string; templateId: string; versionId: string },
): Promise<string> {
  const now = iso(new Date());
  const id = crypto.randomUUID();
  await store.db.insertInto('workspaces').values({
    id, name: input.name, owner_id: input.owner, template_id: input.templateId, template_version_id: input.versionId,
    params_json: '{}', status: 'stopped', last_build_id: null, created_at: now, updated_at: now, deleted_at: null,
  }).execute();
  return id;
}
