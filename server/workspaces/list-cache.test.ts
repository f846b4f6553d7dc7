import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createTestDatabase, storeDialects } from '../../test/support/postgres.ts';
import { openStore, type Store } from '../store/connect.ts';
import { cachedListPage } from './list-cache.ts';
import { listWorkspaces } from './queries.ts';

describe.each(storeDialects)('list page cache on %s', (dialect) => {
  let store: Store;
  let options: { sqlitePath: string } | { databaseUrl: string };
  let cleanup: () => Promise<void>;
  const ids = { alice: crypto.randomUUID(), template: crypto.randomUUID(), v1: crypto.randomUUID(), ws: crypto.randomUUID(), build: crypto.randomUUID() };
  const at = new Date(Date.UTC(2026, 0, 1)).toISOString();

  beforeEach(async () => {
    if (dialect === 'postgres') {
      const database = await createTestDatabase();
      options = { databaseUrl: database.url };
      store = await openStore(options);
      cleanup = () => database.drop();
    } else {
      const dir = mkdtempSync(join(tmpdir(), 'den-list-cache-'));
      options = { sqlitePath: join(dir, 'den.sqlite') };
      store = await openStore(options);
      cleanup = async () => rmSync(dir, { recursive: true, force: true });
    }
    await store.db.insertInto('users').values({ id: ids.alice, username: 'alice', display_name: 'alice', role: 'member', password_hash: null, suspended: 0, created_at: at, updated_at: at }).execute();
    await store.db.insertInto('templates').values({ id: ids.template, name: 'starter', display_name: 'Starter', description: '', icon: null, active_version_id: ids.v1, created_by: ids.alice, created_at: at, updated_at: at }).execute();
    await store.db.insertInto('template_versions').values({ id: ids.v1, template_id: ids.template, number: 1, spec_json: '{}', files_json: '{}', message: '', created_by: ids.alice, created_at: at }).execute();
    await store.db.insertInto('workspaces').values({
      id: ids.ws, name: 'a0', owner_id: ids.alice, template_id: ids.template, template_version_id: ids.v1, params_json: '{}',
      status: 'stopped', last_build_id: null, created_at: at, updated_at: at, deleted_at: null,
    }).execute();
    await store.db.insertInto('builds').values({
      id: ids.build, workspace_id: ids.ws, number: 1, transition: 'start', reason: 'create', initiator_id: ids.alice, template_version_id: ids.v1,
      params_json: '{}', state: 'running', error: null, steps_json: '[]', lease_owner: null, lease_expires_at: null, attempts: 1,
      created_at: at, started_at: at, finished_at: null,
    }).execute();
    await store.db.updateTable('workspaces').set({ last_build_id: ids.build }).where('id', '=', ids.ws).execute();
  });

  afterEach(async () => {
    await store.close();
    await cleanup();
  });

  let loads = 0;
  async function page(): Promise<{ workspaces: Record<string, any>[] }> {
    const body = await cachedListPage(store, `${ids.alice} 50 0`, async () => {
      loads++;
      return listWorkspaces(store.db, { ownerId: ids.alice, limit: 50, offset: 0 });
    });
    return JSON.parse(body.toString());
  }

  it('serves a page again only while no table the list reads has changed', async () => {
    loads = 0;
    await page();
    await page();
    expect(loads).toBe(1);

    // Each write below changes what the page shows, through a different table; the next page must show it.
    const changes: [string, () => Promise<unknown>, (ws: Record<string, any>) => unknown, unknown][] = [
      ['workspaces', () => store.db.updateTable('workspaces').set({ health: 'down', health_message: 'gone', health_at: at }).execute(), (ws) => ws.health?.state, 'down'],
      ['agents', () => store.db.insertInto('agents').values({ workspace_id: ids.ws, name: 'main', state: 'ready', revision: null, connected_at: null, disconnected_at: null }).execute(), (ws) => ws.agentState, 'ready'],
      ['builds', () => store.db.updateTable('builds').set({ state: 'succeeded' }).execute(), (ws) => ws.latestBuild.state, 'succeeded'],
      ['users', () => store.db.updateTable('users').set({ username: 'alicia' }).execute(), (ws) => ws.owner, 'alicia'],
      ['templates', () => store.db.updateTable('templates').set({ name: 'base' }).execute(), (ws) => ws.template, 'base'],
      ['template_versions', () => store.db.updateTable('template_versions').set({ number: 7 }).execute(), (ws) => ws.templateVersion, 7],
    ];
    for (const [table, write, read, expected] of changes) {
      await write();
      expect(read((await page()).workspaces[0]), table).toEqual(expected);
    }
    await store.db.updateTable('workspaces').set({ deleted_at: at }).execute();
    expect((await page()).workspaces).toEqual([]);
  });

  it('sees a write made by another connection (another process on the file, another replica)', async () => {
    await page();
    const other = await openStore(options);
    try {
      await other.db.updateTable('workspaces').set({ status: 'running' }).execute();
    } finally {
      await other.close();
    }
    expect((await page()).workspaces[0].status).toBe('running');
  });
});
