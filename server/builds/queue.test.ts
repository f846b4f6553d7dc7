import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../store/connect.ts';
import { iso } from '../store/time.ts';
import { createTestDatabase, storeDialects } from '../../test/support/postgres.ts';
import { cancelRequestOf, claimBuild, enqueueBuild, finishBuild, renewLease, requestBuildCancel, requeueBuild } from './queue.ts';

const LEASE_MS = 30_000;

describe.each(storeDialects)('build queue on %s', (dialect) => {
  let store: Store;
  let cleanup: () => Promise<void>;
  let workspaceId: string;
  let userId: string;
  let versionId: string;

  beforeEach(async () => {
    if (dialect === 'postgres') {
      const pg = await createTestDatabase();
      store = await openStore({ databaseUrl: pg.url });
      cleanup = async () => { await store.close(); await pg.drop(); };
    } else {
      const dir = mkdtempSync(join(tmpdir(), 'den-queue-'));
      store = await openStore({ dataDir: dir });
      cleanup = async () => { await store.close(); rmSync(dir, { recursive: true, force: true }); };
    }
    ({ workspaceId, userId, versionId } = await seed(store));
  });
  afterEach(() => cleanup());

  const request = (transition: 'start' | 'stop' | 'delete' = 'start', now = new Date()) =>
    ({ workspaceId, transition, reason: transition, initiatorId: userId, templateVersionId: versionId, params: { a: 1 }, now });
  const enqueue = (transition: 'start' | 'stop' | 'delete' = 'start') =>
    store.db.transaction().execute((trx) => enqueueBuild(trx, request(transition)));

  it('numbers builds per workspace and points the workspace at the latest', async () => {
    const first = await enqueue();
    expect(first).toMatchObject({ number: 1, state: 'queued', attempts: 0 });
    const claimed = await claimBuild(store.db, 'w1', new Date(), LEASE_MS);
    await finishBuild(store.db, claimed!.id, 'w1', { state: 'succeeded', error: null, steps: [], now: new Date() });
    const second = await enqueue('stop');
    expect(second.number).toBe(2);
    const workspace = await store.db.selectFrom('workspaces').select('last_build_id').where('id', '=', workspaceId).executeTakeFirstOrThrow();
    expect(workspace.last_build_id).toBe(second.id);
  });

  it('refuses a second build while one is queued or running with BUILD_IN_PROGRESS', async () => {
    await enqueue();
    await expect(enqueue('stop')).rejects.toMatchObject({ code: 'BUILD_IN_PROGRESS' });
    await claimBuild(store.db, 'w1', new Date(), LEASE_MS);
    await expect(enqueue('stop')).rejects.toMatchObject({ code: 'BUILD_IN_PROGRESS' });
  });

  it('lets exactly one of many concurrent requests queue a build', async () => {
    const results = await Promise.allSettled(Array.from({ length: 8 }, () => enqueue()));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'BUILD_IN_PROGRESS' });
    expect(await store.db.selectFrom('builds').select('id').execute()).toHaveLength(1);
  });

  it('gives a queued build to exactly one of many concurrent workers', async () => {
    await enqueue();
    const claims = await Promise.all(Array.from({ length: 6 }, (_, i) => claimBuild(store.db, `w${i}`, new Date(), LEASE_MS)));
    const winners = claims.filter(Boolean);
    expect(winners).toHaveLength(1);
    expect(winners[0]).toMatchObject({ state: 'running', attempts: 1, lease_owner: expect.stringMatching(/^w\d$/) });
  });

  it('lets another worker take over a build whose lease expired, and the old worker loses it', async () => {
    await enqueue();
    const t0 = new Date('2030-01-01T00:00:00Z');
    const first = await claimBuild(store.db, 'dead', t0, LEASE_MS);
    expect(await claimBuild(store.db, 'other', new Date(t0.getTime() + LEASE_MS - 1), LEASE_MS)).toBeUndefined();
    const taken = await claimBuild(store.db, 'other', new Date(t0.getTime() + LEASE_MS + 1), LEASE_MS);
    expect(taken).toMatchObject({ id: first!.id, attempts: 2, lease_owner: 'other', started_at: first!.started_at });
    expect(await renewLease(store.db, first!.id, 'dead', new Date())).toBe(false);
    expect(await finishBuild(store.db, first!.id, 'dead', { state: 'succeeded', error: null, steps: [], now: new Date() })).toBe(false);
    expect(await renewLease(store.db, first!.id, 'other', new Date())).toBe(true);
  });

  it('hands a build back to the queue on graceful shutdown without counting an attempt', async () => {
    await enqueue();
    const claimed = await claimBuild(store.db, 'w1', new Date(), LEASE_MS);
    await requeueBuild(store.db, claimed!.id, 'w1');
    const again = await claimBuild(store.db, 'w2', new Date(), LEASE_MS);
    expect(again).toMatchObject({ id: claimed!.id, attempts: 1, lease_owner: 'w2' });
  });

  it('cancels a queued build so that no worker takes it, and lets the next build be queued', async () => {
    const queued = await enqueue();
    const user = { id: userId, username: 'u' };
    expect(await store.db.transaction().execute((trx) => requestBuildCancel(trx, queued.id, user, new Date()))).toBe('canceled');
    expect(await claimBuild(store.db, 'w1', new Date(), LEASE_MS)).toBeUndefined();
    const row = await store.db.selectFrom('builds').selectAll().where('id', '=', queued.id).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ state: 'canceled', error: 'Canceled by u before it started.', cancel_requested_by: userId, started_at: null });
    expect((await enqueue('delete')).number).toBe(2);
  });

  it('records a cancel of a running build for its worker, which still holds the lease and finishes it', async () => {
    await enqueue();
    const claimed = await claimBuild(store.db, 'w1', new Date(), LEASE_MS);
    const user = { id: userId, username: 'u' };
    expect(await store.db.transaction().execute((trx) => requestBuildCancel(trx, claimed!.id, user, new Date()))).toBe('requested');
    expect(await cancelRequestOf(store.db, claimed!.id)).toBe(userId);
    expect(await renewLease(store.db, claimed!.id, 'w1', new Date())).toBe(true);
    expect(await finishBuild(store.db, claimed!.id, 'w1', { state: 'canceled', error: 'Canceled by u.', steps: [], now: new Date() })).toBe(true);
    // a cancel arriving after the build ended changes nothing
    expect(await store.db.transaction().execute((trx) => requestBuildCancel(trx, claimed!.id, user, new Date()))).toBe('requested');
    expect(await store.db.selectFrom('builds').select('state').where('id', '=', claimed!.id).executeTakeFirstOrThrow()).toEqual({ state: 'canceled' });
  });
});

async function seed(store: Store) {
  const now = iso(new Date());
  const userId = randomUUID();
  const templateId = randomUUID();
  const versionId = randomUUID();
  const workspaceId = randomUUID();
  await store.db.insertInto('users').values({ id: userId, username: 'u', display_name: 'U', role: 'member', password_hash: null, suspended: 0, created_at: now, updated_at: now }).execute();
  await store.db.insertInto('templates').values({ id: templateId, name: 't', display_name: 't', description: '', icon: null, active_version_id: versionId, created_by: userId, created_at: now, updated_at: now }).execute();
  await store.db.insertInto('template_versions').values({ id: versionId, template_id: templateId, number: 1, spec_json: '{}', files_json: '{}', message: '', created_by: userId, created_at: now }).execute();
  await store.db.insertInto('workspaces').values({
    id: workspaceId, name: 'w', owner_id: userId, template_id: templateId, template_version_id: versionId, params_json: '{}',
    status: 'pending', last_build_id: null, created_at: now, updated_at: now, deleted_at: null,
  }).execute();
  return { workspaceId, userId, versionId };
}
