import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { workspaceListSchema, workspaceSchema } from '../../protocol/workspaces.ts';
import { storeDialects } from '../../test/support/postgres.ts';
import { openTestStore } from '../../test/support/test-store.ts';
import type { Store } from '../store/connect.ts';
import { getWorkspaceDto, listWorkspaces } from './queries.ts';

describe.each(storeDialects)('workspace queries on %s', (dialect) => {
  let store: Store;
  let close: () => Promise<void>;
  const ids = { alice: crypto.randomUUID(), bob: crypto.randomUUID(), template: crypto.randomUUID(), v1: crypto.randomUUID(), v2: crypto.randomUUID() };

  beforeEach(async () => {
    ({ store, close } = await openTestStore(dialect));
    await seed(store);
  });

  afterEach(() => close());

  async function seed(s: Store): Promise<void> {
    const at = (i: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString();
    for (const [id, username] of [[ids.alice, 'alice'], [ids.bob, 'bob']]) {
      await s.db.insertInto('users').values({ id, username, display_name: username, role: 'member', password_hash: null, suspended: 0, created_at: at(0), updated_at: at(0) }).execute();
    }
    await s.db.insertInto('templates').values({ id: ids.template, name: 'starter', display_name: 'Starter', description: '', icon: null, active_version_id: ids.v2, created_by: ids.alice, created_at: at(0), updated_at: at(0) }).execute();
    for (const [id, number] of [[ids.v1, 1], [ids.v2, 2]] as const) {
      await s.db.insertInto('template_versions').values({ id, template_id: ids.template, number, spec_json: '{}', files_json: '{}', message: '', created_by: ids.alice, created_at: at(0) }).execute();
    }
    // alice: a0..a4 (a2 deleted, a3 on the old version with a build); bob: b0
    const rows = [0, 1, 2, 3, 4].map((i) => ({
      id: `00000000-0000-4000-8000-00000000000${i}`, name: `a${i}`, owner_id: ids.alice, template_id: ids.template,
      template_version_id: i === 3 ? ids.v1 : ids.v2, params_json: JSON.stringify({ greeting: `hi ${i}`, n: i, tags: ['x'] }),
      status: 'stopped' as const, last_build_id: null, created_at: at(i + 1), updated_at: at(i + 1), deleted_at: i === 2 ? at(9) : null,
    }));
    rows.push({ ...rows[0], id: crypto.randomUUID(), name: 'b0', owner_id: ids.bob, created_at: at(0), updated_at: at(0), deleted_at: null });
    await s.db.insertInto('workspaces').values(rows).execute();
    const buildId = crypto.randomUUID();
    await s.db.insertInto('builds').values({
      id: buildId, workspace_id: rows[3].id, number: 1, transition: 'start', reason: 'create', initiator_id: ids.alice, template_version_id: ids.v1,
      params_json: '{}', state: 'failed', error: 'boom', steps_json: '[]', lease_owner: null, lease_expires_at: null, attempts: 1,
      created_at: at(5), started_at: at(5), finished_at: at(6),
    }).execute();
    await s.db.updateTable('workspaces').set({ last_build_id: buildId }).where('id', '=', rows[3].id).execute();
  }

  it('lists one owner\'s live workspaces in creation order, with the total of all pages', async () => {
    const first = await listWorkspaces(store.db, { ownerId: ids.alice, limit: 2, offset: 0 });
    expect(first.total).toBe(4);
    expect(first.workspaces.map((w) => w.name)).toEqual(['a0', 'a1']);
    const second = await listWorkspaces(store.db, { ownerId: ids.alice, limit: 2, offset: 2 });
    expect(second).toMatchObject({ total: 4 });
    expect(second.workspaces.map((w) => w.name)).toEqual(['a3', 'a4']);
    const bobs = await listWorkspaces(store.db, { ownerId: ids.bob, limit: 50, offset: 0 });
    expect(bobs.workspaces.map((w) => w.name)).toEqual(['b0']);
    expect(bobs.total).toBe(1);
  });

  it('counts the total on its own when the page is past the end', async () => {
    expect(await listWorkspaces(store.db, { ownerId: ids.alice, limit: 2, offset: 10 })).toEqual({ workspaces: [], total: 4 });
    expect(await listWorkspaces(store.db, { ownerId: crypto.randomUUID(), limit: 2, offset: 0 })).toEqual({ workspaces: [], total: 0 });
    expect(await listWorkspaces(store.db, { limit: 2, offset: 10 })).toEqual({ workspaces: [], total: 5 });
  });

  it('lists everyone\'s workspaces when no owner is given', async () => {
    const all = await listWorkspaces(store.db, { limit: 50, offset: 0 });
    expect(all.total).toBe(5);
    expect(all.workspaces.map((w) => `${w.owner}/${w.name}`)).toEqual(['bob/b0', 'alice/a0', 'alice/a1', 'alice/a3', 'alice/a4']);
  });

  it('returns rows in exactly the API schema: params decoded, latest build summarized, outdated flagged', async () => {
    const list = await listWorkspaces(store.db, { ownerId: ids.alice, limit: 50, offset: 0 });
    const body = { ...list, limit: 50, offset: 0 };
    // The route serializes this with JSON.stringify, not zod: nothing may be missing or extra.
    expect(workspaceListSchema.parse(body)).toEqual(body);
    const a3 = list.workspaces.find((w) => w.name === 'a3')!;
    expect(a3).toMatchObject({
      owner: 'alice', template: 'starter', templateVersion: 1, templateVersionId: ids.v1, outdated: true,
      params: { greeting: 'hi 3', n: 3, tags: ['x'] }, status: 'stopped', agentState: null,
      latestBuild: { number: 1, transition: 'start', state: 'failed', error: 'boom', finishedAt: '2026-01-01T00:00:06.000Z' },
    });
    expect(list.workspaces.find((w) => w.name === 'a0')).toMatchObject({ outdated: false, latestBuild: null, templateVersion: 2 });
    expect(await getWorkspaceDto(store.db, a3.id)).toEqual(a3);
    expect(workspaceSchema.parse(a3)).toEqual(a3);
  });

  it('answers WORKSPACE_NOT_FOUND for a deleted or unknown workspace', async () => {
    await expect(getWorkspaceDto(store.db, '00000000-0000-4000-8000-000000000002')).rejects.toMatchObject({ code: 'WORKSPACE_NOT_FOUND' });
    await expect(getWorkspaceDto(store.db, crypto.randomUUID())).rejects.toMatchObject({ code: 'WORKSPACE_NOT_FOUND' });
  });
});
