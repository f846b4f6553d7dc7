import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../store/connect.ts';
import { createTestDatabase, storeDialects } from '../../test/support/postgres.ts';
import { seedWorkspace } from '../../test/support/workspace-seed.ts';
import { authenticateAgent, currentAgentBuild, hashAgentToken, issueAgentToken, revokeAgentTokens } from './tokens.ts';

describe.each(storeDialects)('agent tokens (%s)', (dialect) => {
  let store: Store;
  let drop: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    if (dialect === 'postgres') {
      const pg = await createTestDatabase();
      drop = pg.drop;
      store = await openStore({ databaseUrl: pg.url });
    } else {
      store = await openStore({ sqlitePath: ':memory:' });
    }
  });
  afterAll(async () => {
    await store?.close();
    await drop?.();
  });

  it('issues a random token stored only as its sha256, with the manifest, and opens exactly its workspace', async () => {
    const ws = await seedWorkspace(store.db, { username: 'dora', workspaceName: 'one' });
    const manifest = { env: { A: 'b' }, startupScripts: [{ name: 'setup', run: 'true' }] };
    const token = await issueAgentToken(store.db, { workspaceId: ws.workspaceId, buildId: ws.buildId, manifest, now: new Date() });
    expect(token).toMatch(/^denagent_[A-Za-z0-9_-]{43}$/);

    const rows = await store.db.selectFrom('agent_tokens').selectAll().where('workspace_id', '=', ws.workspaceId).execute();
    expect(rows).toHaveLength(1);
    expect(rows[0].token_hash).toBe(hashAgentToken(token));
    expect(JSON.stringify(rows[0])).not.toContain(token);

    expect(await authenticateAgent(store.db, token)).toEqual({
      workspaceId: ws.workspaceId,
      agentName: 'main',
      workspaceName: 'one',
      ownerName: 'dora',
      buildId: ws.buildId,
      manifest: { env: { A: 'b' }, apps: [], startupScripts: [{ name: 'setup', run: 'true', blocking: true, timeoutMs: 300_000 }] },
    });
    expect(await currentAgentBuild(store.db, ws.workspaceId)).toBe(ws.buildId);
  });

  it('revokes the previous token of the workspace when a new build gets one, and clears its state', async () => {
    const ws = await seedWorkspace(store.db, { username: 'eve', workspaceName: 'two' });
    const first = await issueAgentToken(store.db, { workspaceId: ws.workspaceId, buildId: 'build-1', manifest: {}, now: new Date() });
    await store.db.updateTable('agents').set({ state: 'ready' }).where('workspace_id', '=', ws.workspaceId).execute();
    const second = await issueAgentToken(store.db, { workspaceId: ws.workspaceId, buildId: 'build-2', manifest: {}, now: new Date() });
    expect(await authenticateAgent(store.db, first)).toBeUndefined();
    expect((await authenticateAgent(store.db, second))?.buildId).toBe('build-2');
    const row = await store.db.selectFrom('agents').select('state as agent_state').where('workspace_id', '=', ws.workspaceId).where('name', '=', 'main').executeTakeFirstOrThrow();
    expect(row.agent_state).toBeNull();

    await revokeAgentTokens(store.db, ws.workspaceId, new Date());
    expect(await authenticateAgent(store.db, second)).toBeUndefined();
    expect(await currentAgentBuild(store.db, ws.workspaceId)).toBeUndefined();
  });

  it('scopes each token to one agent: a service agent\'s token leaves the main agent\'s live, and a stop revokes both', async () => {
    const ws = await seedWorkspace(store.db, { username: 'gus', workspaceName: 'pair' });
    const main = await issueAgentToken(store.db, { workspaceId: ws.workspaceId, buildId: ws.buildId, manifest: {}, revision: 'r-main', now: new Date() });
    const api = await issueAgentToken(store.db, { workspaceId: ws.workspaceId, agent: 'api', buildId: ws.buildId, manifest: {}, revision: 'r-api', now: new Date() });
    expect((await authenticateAgent(store.db, main))?.agentName).toBe('main');
    expect((await authenticateAgent(store.db, api))?.agentName).toBe('api');
    expect(await currentAgentBuild(store.db, { workspaceId: ws.workspaceId, agent: 'api' })).toBe(ws.buildId);
    const agents = await store.db.selectFrom('agents').select(['name', 'revision']).where('workspace_id', '=', ws.workspaceId).orderBy('name').execute();
    expect(agents).toEqual([{ name: 'api', revision: 'r-api' }, { name: 'main', revision: 'r-main' }]);

    // a new token for the service agent revokes its old one only
    const api2 = await issueAgentToken(store.db, { workspaceId: ws.workspaceId, agent: 'api', buildId: 'build-2', manifest: {}, now: new Date() });
    expect(await authenticateAgent(store.db, api)).toBeUndefined();
    expect((await authenticateAgent(store.db, main))?.agentName).toBe('main');
    expect(await currentAgentBuild(store.db, ws.workspaceId)).toBe(ws.buildId);

    await revokeAgentTokens(store.db, ws.workspaceId, new Date());
    expect(await authenticateAgent(store.db, main)).toBeUndefined();
    expect(await authenticateAgent(store.db, api2)).toBeUndefined();
  });

  it('rejects unknown, malformed and deleted-workspace tokens', async () => {
    const ws = await seedWorkspace(store.db, { username: 'finn', workspaceName: 'three' });
    const token = await issueAgentToken(store.db, { workspaceId: ws.workspaceId, buildId: ws.buildId, manifest: {}, now: new Date() });
    expect(await authenticateAgent(store.db, 'denagent_unknown')).toBeUndefined();
    expect(await authenticateAgent(store.db, 'not-an-agent-token')).toBeUndefined();
    expect(await authenticateAgent(store.db, `denagent_${'x'.repeat(500)}`)).toBeUndefined();
    await store.db.updateTable('workspaces').set({ deleted_at: new Date().toISOString() }).where('id', '=', ws.workspaceId).execute();
    expect(await authenticateAgent(store.db, token)).toBeUndefined();
  });
});
