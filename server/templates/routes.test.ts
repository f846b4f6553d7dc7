import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeDialects } from '../../test/support/postgres.ts';
import { startTestServer, type TestServer } from '../../test/support/harness.ts';
import { api, createUserWithToken, setupOwner, type Api, type TestUser } from '../../test/support/users.ts';
import { getActiveVersion, getTemplateVersionById } from './store.ts';

const yaml = (name: string, extra = '') => `name: ${name}
displayName: Demo ${name}
workspace:
  image: den/base:bookworm
  env:
    GREETING: "\${{ params.greeting }}"
parameters:
  - name: greeting
    type: string
    default: hello
${extra}`;

describe.each(storeDialects)('template routes on %s', (dialect) => {
  let server: TestServer;
  let admin: Api;
  let member: Api;
  let owner: Api;
  let ownerId: string;
  let adminUser: TestUser;
  let memberUser: TestUser;

  beforeAll(async () => {
    server = await startTestServer({ dialect, startWorkers: false, config: { maxTemplateBytes: 64 * 1024 } });
    const first = await setupOwner(server.app);
    ownerId = first.userId;
    owner = api(server.app, first.token);
    adminUser = await createUserWithToken(server.app, first.token, 'template-admin');
    memberUser = await createUserWithToken(server.app, first.token, 'member');
    admin = api(server.app, adminUser.token);
    member = api(server.app, memberUser.token);
  });
  afterAll(async () => server?.close());

  it('creates the template on first push, activates version 1, and numbers later pushes', async () => {
    const first = await admin.post('/api/v1/templates', { files: { 'template.yaml': yaml('demo'), 'scripts/db.js': 'x' }, message: 'first' });
    expect(first.status).toBe(201);
    expect(first.json).toMatchObject({ created: true, template: { name: 'demo', displayName: 'Demo demo', activeVersion: 1, versions: 1 }, version: { number: 1, active: true, message: 'first' } });

    const second = await admin.post('/api/v1/templates', { files: { 'template.yaml': yaml('demo') } });
    expect(second.json).toMatchObject({ created: false, template: { activeVersion: 1, versions: 2 }, version: { number: 2, active: false } });

    const third = await admin.post('/api/v1/templates', { files: { 'template.yaml': yaml('demo') }, activate: true });
    expect(third.json).toMatchObject({ template: { activeVersion: 3 }, version: { number: 3, active: true } });
  });

  it('numbers concurrent pushes of a new template without gaps or duplicates', async () => {
    // each push differs (an identical push of the active version returns that version instead)
    const pushes = await Promise.all(Array.from({ length: 6 }, (_, i) => admin.post('/api/v1/templates', { files: { 'template.yaml': yaml('race'), 'NOTES.md': `push ${i}\n` } })));
    expect(pushes.map((p) => p.status)).toEqual(Array(6).fill(201));
    expect(pushes.map((p) => p.json.version.number).sort()).toEqual([1, 2, 3, 4, 5, 6]);
    expect(pushes.filter((p) => p.json.created)).toHaveLength(1);
  });

  it('lists, shows and pulls versions to any user', async () => {
    const list = await member.get('/api/v1/templates');
    expect(list.status).toBe(200);
    expect(list.json.templates.find((t: { name: string }) => t.name === 'demo')).toMatchObject({ activeVersion: 3, versions: 3, workspaces: 0 });
    const shown = (await member.get('/api/v1/templates/demo')).json;
    expect(shown).toMatchObject({ name: 'demo', activeVersion: 3, versions: 3 });
    expect(shown.versionList.map((v: { number: number; active: boolean }) => [v.number, v.active])).toEqual([[3, true], [2, false], [1, false]]);
    const versions = await member.get('/api/v1/templates/demo/versions');
    expect(versions.json.versions.map((v: { number: number }) => v.number)).toEqual([3, 2, 1]);
    const pulled = await member.get('/api/v1/templates/demo/versions/1');
    expect(pulled.status).toBe(200);
    expect(pulled.json.files).toEqual({ 'template.yaml': yaml('demo'), 'scripts/db.js': 'x' });
    expect(pulled.json.spec).toMatchObject({ name: 'demo', parameters: [{ name: 'greeting', mutable: true }] });
  });

  it('activates an older version', async () => {
    const response = await admin.post('/api/v1/templates/demo/activate', { version: 2 });
    expect(response.json).toMatchObject({ activeVersion: 2 });
    const active = await getActiveVersion(server.store.db, 'demo');
    expect(active.version.number).toBe(2);
    const byId = await getTemplateVersionById(server.store.db, active.version.id);
    expect(byId).toMatchObject({ number: 2, template: { name: 'demo' }, spec: { name: 'demo' } });
    expect(await getTemplateVersionById(server.store.db, randomUUID())).toBeUndefined();
  });

  it('answers missing templates and versions with their codes', async () => {
    expect((await member.get('/api/v1/templates/nope')).json.error.code).toBe('TEMPLATE_NOT_FOUND');
    expect((await member.get('/api/v1/templates/demo/versions/9')).json.error).toMatchObject({ code: 'TEMPLATE_VERSION_NOT_FOUND', message: expect.stringContaining('den templates versions demo') });
    expect((await admin.post('/api/v1/templates/demo/activate', { version: 9 })).status).toBe(404);
    await expect(getActiveVersion(server.store.db, 'nope')).rejects.toMatchObject({ code: 'TEMPLATE_NOT_FOUND' });
  });

  it('points a template error at its field and line', async () => {
    const response = await admin.post('/api/v1/templates', { files: { 'template.yaml': yaml('bad', 'lifecycle:\n  autostop: 2 hours\n') } });
    expect(response.status).toBe(400);
    expect(response.json.error.code).toBe('TEMPLATE_INVALID');
    expect(response.json.error.validations[0]).toMatchObject({ field: 'lifecycle.autostop', line: 12 });
    expect(response.json.error.message).toContain('line 12');
    expect((await member.get('/api/v1/templates/bad')).status).toBe(404);
  });

  it('refuses pushes without template.yaml, with unsafe paths, or too large', async () => {
    expect((await admin.post('/api/v1/templates', { files: { 'README.md': '#' } })).json.error.code).toBe('TEMPLATE_INVALID');
    const unsafe = await admin.post('/api/v1/templates', { files: { 'template.yaml': yaml('x'), '../escape': '' } });
    expect(unsafe.json.error).toMatchObject({ code: 'TEMPLATE_INVALID', validations: [{ field: 'files["../escape"]' }] });
    const big = await admin.post('/api/v1/templates', { files: { 'template.yaml': yaml('big'), 'blob.bin': 'x'.repeat(70 * 1024) } });
    expect(big.status).toBe(413);
    expect(big.json.error.code).toBe('PAYLOAD_TOO_LARGE');
    expect((await admin.post('/api/v1/templates', { files: { 'template.yaml': 'name: [' } })).json.error.code).toBe('TEMPLATE_YAML_INVALID');
  });

  it('refuses nesting and node bombs with the coded error and the line, and still takes a real template', async () => {
    const bomb = await admin.post('/api/v1/templates', { files: { 'template.yaml': `name: bomb\nworkspace:\n  image: x\nx: ${'- '.repeat(30_000)}x\n` } });
    expect(bomb.status).toBe(400);
    expect(bomb.json.error).toMatchObject({ code: 'TEMPLATE_YAML_INVALID', validations: [{ field: '(yaml)', line: 4 }] });
    expect(bomb.json.error.message).toContain('nests more than 64 levels deep');
    const wide = await admin.post('/api/v1/templates', { files: { 'template.yaml': `name: wide\nworkspace:\n  image: x\nx: [${'1,'.repeat(20_000)}]\n` } });
    expect(wide.json.error).toMatchObject({ code: 'TEMPLATE_YAML_INVALID', message: expect.stringContaining('more than 5000 YAML nodes') });
    expect((await admin.post('/api/v1/templates', { files: { 'template.yaml': yaml('after-bombs') } })).status).toBe(201);
  });

  it('lets only template admins write', async () => {
    expect((await member.post('/api/v1/templates', { files: { 'template.yaml': yaml('mine') } })).status).toBe(403);
    expect((await member.post('/api/v1/templates/demo/activate', { version: 1 })).status).toBe(403);
    expect((await member.delete('/api/v1/templates/demo')).status).toBe(403);
    expect((await api(server.app).get('/api/v1/templates')).status).toBe(401);
  });

  it('serves the JSON Schema without sign-in', async () => {
    const response = await api(server.app).get('/api/v1/templates/schema');
    expect(response.status).toBe(200);
    expect(response.json.properties.workspace).toBeDefined();
  });

  /** A live workspace on the active version of `template`, owned by `ownerUserId`. */
  async function seedWorkspace(template: string, ownerUserId: string, name: string): Promise<string> {
    const active = await getActiveVersion(server.store.db, template);
    const now = new Date().toISOString();
    const id = randomUUID();
    await server.store.db.insertInto('workspaces').values({
      id, name, owner_id: ownerUserId, template_id: active.template.id, template_version_id: active.version.id,
      params_json: '{}', status: 'stopped', last_build_id: null, created_at: now, updated_at: now, deleted_at: null,
    }).execute();
    return id;
  }

  it('refuses to delete a template a live workspace uses, then deletes it and frees the name', async () => {
    await admin.post('/api/v1/templates', { files: { 'template.yaml': yaml('used') } });
    const workspaceId = await seedWorkspace('used', ownerId, 'ws');
    expect((await member.get('/api/v1/templates/used')).json.workspaces).toBe(1);
    const refused = await owner.delete('/api/v1/templates/used');
    expect(refused.status).toBe(409);
    expect(refused.json.error).toMatchObject({ code: 'TEMPLATE_IN_USE', message: expect.stringContaining('owner/ws') });

    const now = new Date().toISOString();
    await server.store.db.updateTable('workspaces').set({ deleted_at: now, status: 'deleted' }).where('id', '=', workspaceId).execute();
    expect((await admin.delete('/api/v1/templates/used')).json).toEqual({ name: 'used', deleted: true });
    expect((await member.get('/api/v1/templates/used')).status).toBe(404);
    const again = await admin.post('/api/v1/templates', { files: { 'template.yaml': yaml('used') } });
    expect(again.json).toMatchObject({ created: true, version: { number: 1 } });
  });

  it("names in TEMPLATE_IN_USE only the workspaces the caller may see, and counts the others", async () => {
    await admin.post('/api/v1/templates', { files: { 'template.yaml': yaml('shared') } });
    await seedWorkspace('shared', memberUser.userId, 'member-secret-1');
    await seedWorkspace('shared', memberUser.userId, 'member-secret-2');
    await seedWorkspace('shared', adminUser.userId, 'admin-own');

    const byAdmin = (await admin.delete('/api/v1/templates/shared')).json.error;
    expect(byAdmin.code).toBe('TEMPLATE_IN_USE');
    expect(byAdmin.message).toBe(`Template 'shared' is still used by 3 live workspaces (${adminUser.username}/admin-own; 2 of other users). `
      + 'Delete yours (`den delete`) and ask the other users (or a den owner) to delete theirs, then try again.');
    expect(JSON.stringify(byAdmin)).not.toContain('member-secret');
    expect(JSON.stringify(byAdmin)).not.toContain(memberUser.username);

    const byOwner = (await owner.delete('/api/v1/templates/shared')).json.error;
    expect(byOwner.message).toContain(`${memberUser.username}/member-secret-1, ${memberUser.username}/member-secret-2, ${adminUser.username}/admin-own`);
    expect(byOwner.message).toContain('Delete them (`den delete`) first.');
  });

  it('names none of the workspaces to a template admin who owns none of them', async () => {
    await admin.post('/api/v1/templates', { files: { 'template.yaml': yaml('others') } });
    await seedWorkspace('others', memberUser.userId, 'hidden-ws');
    const error = (await admin.delete('/api/v1/templates/others')).json.error;
    expect(error).toMatchObject({ code: 'TEMPLATE_IN_USE' });
    expect(error.message).toBe("Template 'others' is still used by 1 live workspace (1 of other users). Ask their owners (or a den owner) to delete them, then try again.");
  });
});
