import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDen, type DenResult } from './support/den-cli.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { storeDialects } from './support/postgres.ts';
import { api, createUserWithToken, setupOwner, type TestUser } from './support/users.ts';
import { seedWorkspace } from './support/workspace-seed.ts';

/**
 * Groups and group grants through the real server on SQLite and PostgreSQL, over the API and the
 * real `den` CLI: den's owners create groups and set members (others get 403), every change is in
 * the groups' history; a workspace's owner grants a group the read-only view of the environment,
 * which each member has while they are a member (removed, suspended or the group deleted: the
 * same 404 as a stranger at the next request), which `den env shared` lists, and which the
 * workspace's events record. That a followed log ends when a member is removed is in
 * test/environment-loop.test.ts (it needs services on a real runtime).
 */
const CLI_TIMEOUT_MS = 30_000;

function expectError(response: { status: number; json: any }, status: number, code: string): void {
  expect({ status: response.status, code: response.json?.error?.code }).toEqual({ status, code });
  expect(response.json.error.message).toMatch(/^[A-Z].*\.$/);
}

describe.each(storeDialects)('groups and group grants on %s', (dialect) => {
  let server: TestServer;
  let admin: TestUser;
  let lead: TestUser;
  let mate: TestUser;
  let stranger: TestUser;
  const homes: string[] = [];
  const WS = 'shop';
  const path = `/api/v1/workspaces/lead/${WS}`;

  beforeAll(async () => {
    server = await startTestServer({ dialect, startWorkers: false, listen: true });
    admin = await setupOwner(server.app, 'root');
    lead = await createUserWithToken(server.app, admin.token, 'member', 'lead');
    mate = await createUserWithToken(server.app, admin.token, 'member', 'mate');
    stranger = await createUserWithToken(server.app, admin.token, 'member', 'stranger');
    await seedWorkspace(server.store.db, { username: 'lead', userId: lead.userId, workspaceName: WS });
  });
  afterAll(async () => {
    await server?.close();
    for (const home of homes) rmSync(home, { recursive: true, force: true });
  });

  async function den(args: string[], user: TestUser): Promise<DenResult> {
    const home = mkdtempSync(join(tmpdir(), 'den-groups-cli-'));
    homes.push(home);
    return runDen(args, { PATH: process.env.PATH!, HOME: home, XDG_CONFIG_HOME: home, DEN_URL: server.url!, DEN_TOKEN: user.token }, CLI_TIMEOUT_MS);
  }

  it('lets den\'s owners create groups and set members, and refuses that to members (403) and anonymous callers (401)', async () => {
    const asAdmin = api(server.app, admin.token);
    const created = await asAdmin.post('/api/v1/groups', { name: 'backend', description: 'the API team' });
    expect(created.status).toBe(201);
    expect(created.json).toMatchObject({ name: 'backend', description: 'the API team', createdBy: 'root', members: [] });
    expectError(await asAdmin.post('/api/v1/groups', { name: 'backend' }), 409, 'GROUP_EXISTS');
    const bad = await asAdmin.post('/api/v1/groups', { name: 'Back End' });
    expectError(bad, 400, 'VALIDATION_FAILED');
    expect(bad.json.error.message).toContain('body.name must use lowercase letters, digits and inner dashes only');

    const added = await asAdmin.put('/api/v1/groups/backend/members/mate');
    expect(added.status).toBe(200);
    expect(added.json.members).toEqual([expect.objectContaining({ user: 'mate', addedBy: 'root' })]);
    expect((await asAdmin.put('/api/v1/groups/backend/members/mate')).json.members).toHaveLength(1);
    expectError(await asAdmin.put('/api/v1/groups/backend/members/nobody'), 404, 'USER_NOT_FOUND');
    expectError(await asAdmin.put('/api/v1/groups/nothing/members/mate'), 404, 'GROUP_NOT_FOUND');
    expectError(await asAdmin.delete('/api/v1/groups/backend/members/stranger'), 404, 'GROUP_MEMBER_NOT_FOUND');

    // every signed-in user may read groups (to grant one); only owners change them
    const asMember = api(server.app, stranger.token);
    expect((await asMember.get('/api/v1/groups')).json.groups).toEqual([expect.objectContaining({ name: 'backend', members: 1 })]);
    expect((await asMember.get('/api/v1/groups/backend')).json.members.map((m: { user: string }) => m.user)).toEqual(['mate']);
    expectError(await asMember.post('/api/v1/groups', { name: 'mine' }), 403, 'FORBIDDEN');
    expectError(await asMember.put('/api/v1/groups/backend/members/stranger'), 403, 'FORBIDDEN');
    expectError(await asMember.delete('/api/v1/groups/backend'), 403, 'FORBIDDEN');
    expectError(await asMember.get('/api/v1/group-events'), 403, 'FORBIDDEN');
    expectError(await api(server.app).get('/api/v1/groups'), 401, 'UNAUTHENTICATED');
  });

  it('gives a group\'s members the environment read-only while they are members, audited on the workspace', async () => {
    const asLead = api(server.app, lead.token);
    const asMate = api(server.app, mate.token);
    expectError(await asMate.get(`${path}/env`), 404, 'WORKSPACE_NOT_FOUND');

    const granted = await asLead.put(`${path}/env/grants/groups/backend`);
    expect(granted.status).toBe(200);
    expect(granted.json).toMatchObject({ group: 'backend', grantedBy: 'lead' });
    expect((await asLead.get(`${path}/env/grants`)).json.grants).toEqual([expect.objectContaining({ group: 'backend', grantedBy: 'lead' })]);
    expectError(await asLead.put(`${path}/env/grants/groups/nothing`), 404, 'GROUP_NOT_FOUND');
    // den's owner role sees the workspace but only its owner grants
    expectError(await api(server.app, admin.token).put(`${path}/env/grants/groups/backend`), 403, 'FORBIDDEN');

    const view = await asMate.get(`${path}/env`);
    expect(view.status).toBe(200);
    expect(view.json).toMatchObject({ viewer: 'teammate', workspace: `lead/${WS}` });
    expect((await asMate.get(`${path}/sync`)).status).toBe(200);
    expect((await asMate.get('/api/v1/environments/shared')).json.environments).toEqual([
      { workspace: `lead/${WS}`, owner: 'lead', name: WS, status: 'running', direct: false, groups: ['backend'] },
    ]);
    // the rest of the workspace stays closed to a teammate through a group, too
    for (const url of [path, `${path}/env/runs`, `${path}/env/grants`, `${path}/events`]) expectError(await asMate.get(url), 404, 'WORKSPACE_NOT_FOUND');
    expectError(await asMate.put(`${path}/env/grants/groups/backend`), 404, 'WORKSPACE_NOT_FOUND');
    expectError(await api(server.app, stranger.token).get(`${path}/env`), 404, 'WORKSPACE_NOT_FOUND');
    expect((await api(server.app, stranger.token).get('/api/v1/environments/shared')).json.environments).toEqual([]);
    // the owner in a group granted on their own workspace: not "shared with" them
    expect((await api(server.app, admin.token).put('/api/v1/groups/backend/members/lead')).status).toBe(200);
    expect((await asLead.get('/api/v1/environments/shared')).json.environments).toEqual([]);
    expect((await api(server.app, admin.token).delete('/api/v1/groups/backend/members/lead')).status).toBe(204);

    // removed: the next request is a stranger's; added again: visible again
    const asAdmin = api(server.app, admin.token);
    expect((await asAdmin.delete('/api/v1/groups/backend/members/mate')).status).toBe(204);
    expectError(await asMate.get(`${path}/env`), 404, 'WORKSPACE_NOT_FOUND');
    expectError(await asMate.get(`${path}/sync`), 404, 'WORKSPACE_NOT_FOUND');
    expect((await asAdmin.put('/api/v1/groups/backend/members/mate')).status).toBe(200);
    expect((await asMate.get(`${path}/env`)).status).toBe(200);

    // suspended: no request of theirs passes at all; lifted: the group's grant holds again
    expect((await asAdmin.patch('/api/v1/users/mate', { suspended: true })).status).toBe(200);
    expectError(await asMate.get(`${path}/env`), 403, 'USER_SUSPENDED');
    expect((await asAdmin.patch('/api/v1/users/mate', { suspended: false })).status).toBe(200);

    const events = (await asLead.get(`${path}/events`)).json.events as { kind: string; message: string }[];
    expect(events.map((event) => event.message)).toEqual(expect.arrayContaining([
      `The members of the group backend may now see the environment of lead/${WS} read-only (granted by lead).`,
      'Teammate mate viewed the environment: services and status.',
      'Teammate mate viewed the environment: sync state.',
      'root removed mate from the group backend: they no longer see this environment through it.',
      'root added mate to the group backend, who now sees this environment read-only.',
    ]));

    expect((await asLead.delete(`${path}/env/grants/groups/backend`)).status).toBe(204);
    expectError(await asLead.delete(`${path}/env/grants/groups/backend`), 404, 'GRANT_NOT_FOUND');
    expect((await asLead.get(`${path}/env/grants`)).json.grants).toEqual([]);
  });

  // the CLI speaks the same API whatever the store: once, on SQLite, saves CI a dozen processes
  if (dialect === 'sqlite') it('drives groups and group grants from the den CLI, and keeps a deleted group\'s history', async () => {
    const created = await den(['groups', 'create', 'qa', '--description', 'testers'], admin);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toContain('Created the group qa.');
    const added = await den(['groups', 'add', 'qa', 'mate', 'stranger'], admin);
    expect(added.code, added.stderr).toBe(0);
    const removed = await den(['groups', 'remove', 'qa', 'stranger'], admin);
    expect(removed.code, removed.stderr).toBe(0);
    const shown = await den(['groups', 'show', 'qa'], lead);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/mate\s+.*by root/);
    expect(shown.stdout).not.toContain('stranger');
    const listed = await den(['groups', 'list'], lead);
    expect(listed.stdout).toMatch(/qa\s+1\s+testers/);
    const refused = await den(['groups', 'create', 'mine'], lead);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('owner');

    const granted = await den(['env', 'grant', WS, '--group', 'qa'], lead);
    expect(granted.code, granted.stderr).toBe(0);
    expect(granted.stdout).toContain(`The members of the group qa may now see the environment of lead/${WS} read-only`);
    const both = await den(['env', 'grant', WS, 'mate', '--group', 'qa'], lead);
    expect(both.code).not.toBe(0);
    expect(both.stderr).toContain('Name a user or a --group, not both');
    const grants = await den(['env', 'grants', WS], lead);
    expect(grants.stdout).toMatch(/group qa\s+lead/);
    const shared = await den(['env', 'shared'], mate);
    expect(shared.code, shared.stderr).toBe(0);
    expect(shared.stdout).toMatch(new RegExp(`lead/${WS}\\s+running\\s+group qa`));
    const asTeammate = await den(['env', 'show', `lead/${WS}`], mate);
    expect(asTeammate.code, asTeammate.stderr).toBe(0);
    expect(asTeammate.stdout).toContain('read-only: you are a teammate');

    const deleted = await den(['groups', 'delete', 'qa'], admin);
    expect(deleted.code, deleted.stderr).toBe(0);
    expect((await api(server.app, mate.token).get(`${path}/env`)).status).toBe(404);
    expect((await api(server.app, lead.token).get(`${path}/env/grants`)).json.grants).toEqual([]);
    const history = await den(['groups', 'history', 'qa'], admin);
    expect(history.code, history.stderr).toBe(0);
    const changes = history.stdout.split('\n').filter((line) => line.includes(' qa ')).map((line) => line.replace(/^.*?\)\s+qa\s+/, ''));
    expect(changes).toEqual([
      'root deleted the group qa.',
      'root removed stranger from the group qa.',
      'root added stranger to the group qa.',
      'root added mate to the group qa.',
      'root created the group qa.',
    ]);
    const events = (await api(server.app, lead.token).get(`${path}/events`)).json.events as { message: string }[];
    expect(events.map((event) => event.message)).toContain('root deleted the group qa: its members no longer see this environment through it.');
  });
});
