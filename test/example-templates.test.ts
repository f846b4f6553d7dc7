import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execInWorkspace } from './support/exec.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { api, setupOwner, type Api } from './support/users.ts';
import { readTemplateFolder, waitForWorkspaceReady } from './support/templates.ts';

/**
 * The example templates in templates/ are pushed and started on the process runtime, the way
 * the README tells a new user to: each must validate, build and become ready, and the
 * environment services of node-api must answer through each other.
 */

const TEMPLATES_DIR = join(import.meta.dirname, '..', 'templates');
const READY_TIMEOUT_MS = 20_000;



describe('example templates on the process runtime', () => {
  let server: TestServer;
  let client: Api;
  let owner: string;
  let ownerId: string;
  let token: string;

  beforeAll(async () => {
    server = await startTestServer({ listen: true });
    const user = await setupOwner(server.app);
    owner = user.username;
    ownerId = user.userId;
    token = user.token;
    client = api(server.app, user.token);
  });
  afterAll(async () => server?.close());

  it.each(readdirSync(TEMPLATES_DIR).filter((name) => statSync(join(TEMPLATES_DIR, name)).isDirectory()))('pushes %s', async (name) => {
    const response = await client.post('/api/v1/templates', { files: readTemplateFolder(join(TEMPLATES_DIR, name)), activate: true });
    expect(response.status, JSON.stringify(response.json)).toBe(201);
    expect(response.json.template.name).toBe(name);
  });

  it('starts a starter workspace with the greeting parameter', async () => {
    const created = await client.post('/api/v1/workspaces', { name: 'greet', template: 'starter', params: { greeting: 'hi there' } });
    expect(created.status, JSON.stringify(created.json)).toBe(202);
    const workspace = await waitForWorkspaceReady(client, owner, 'greet', READY_TIMEOUT_MS);
    expect(workspace.params).toEqual({ greeting: 'hi there' });
  });

  it('starts node-api with both services answering through each other', async () => {
    const created = await client.post('/api/v1/workspaces', { name: 'shop', template: 'node-api', params: { visits_start: '41' } });
    expect(created.status, JSON.stringify(created.json)).toBe(202);
    const workspace = await waitForWorkspaceReady(client, owner, 'shop', READY_TIMEOUT_MS);
    // The driver reports where it put the service (stable for the workspace), as it told the plan.
    const endpoints = await server.den.driver.resolveEndpoints(
      { id: workspace.id, name: 'shop', ownerId, ownerName: owner },
      [{ service: 'api', ports: [3000] }],
    );
    // Reached from inside the workspace: its services live in the workspace's own network.
    const { host, port } = endpoints.api[3000];
    const answer = await execInWorkspace(server.den, workspace.id, ['node', '-e', `fetch('http://${host}:${port}/').then((r) => r.text()).then((t) => process.stdout.write(t))`]);
    expect(answer).toMatchObject({ code: 0, stdout: `hello from ${owner}/shop, visit 42\n` });

    // and from outside, through its preview URL (docs/apps.md): den dials it through the workspace's agent
    const preview = await fetch(`${server.url}/@${owner}/shop/apps/api/`, { headers: { authorization: `Bearer ${token}` } });
    expect(preview.status).toBe(200);
    expect(await preview.text()).toBe(`hello from ${owner}/shop, visit 43\n`);
  });

  it('ran node-api\'s seed task at start, passes its smoke test in the api service, and shows both services\' logs', async () => {
    const path = `/api/v1/workspaces/${owner}/shop/env`;
    const tasks = (await client.get(`${path}/runs?kind=task`)).json.runs;
    expect(tasks).toEqual([expect.objectContaining({ name: 'seed', state: 'passed', trigger: 'build' })]);
    const run = await server.app.inject({ method: 'POST', url: `${path}/tests/smoke/run`, headers: { authorization: `Bearer ${token}` }, payload: {} });
    const lines = run.body.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line));
    expect(lines.at(-1), run.body).toMatchObject({ type: 'result', cached: false, run: { state: 'passed', exitCode: 0 } });
    expect(lines).toContainEqual({ type: 'output', stream: 'stdout', line: 'greeting: hello' });
    const logs = await server.app.inject({ method: 'GET', url: `${path}/logs?tail=50`, headers: { authorization: `Bearer ${token}` } });
    const services = new Set(logs.body.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line).service));
    expect([...services].sort()).toEqual(['api', 'db']);
  });

  it('node-api\'s sync on the process runtime: shown as shared, and an edit in the workspace is what the api serves at once', async () => {
    const sync = await client.get(`/api/v1/workspaces/${owner}/shop/sync`);
    expect(sync.status).toBe(200);
    expect(sync.json.items).toEqual([expect.objectContaining({ service: 'api', from: '~/app', to: '~/app', state: 'shared', inSync: true, lastError: null })]);
    expect(sync.json.items[0].watchMessage).toContain('~/app is ~/app itself, so every edit is there at once and nothing is copied');
    const workspaceId = (await client.get(`/api/v1/workspaces/${owner}/shop`)).json.id as string;
    const routes = "module.exports = { '/hello': () => 'edited on the process runtime\\n' };\n";
    const edit = await execInWorkspace(server.den, workspaceId, ['sh', '-c', 'printf %s "$1" > ~/app/routes.js', 'sh', routes]);
    expect(edit.code, edit.stderr).toBe(0);
    const fetchHello = ['node', '-e', 'fetch(process.env.API_URL + \'/hello\').then((r) => r.text()).then((t) => process.stdout.write(t))'];
    await expect.poll(async () => (await execInWorkspace(server.den, workspaceId, fetchHello)).stdout, { timeout: 10_000, interval: 200 }).toBe('edited on the process runtime\n');
  });

  it('refuses, on the process runtime, a workspace whose template syncs a folder into another path, with a sentence', async () => {
    const template = { name: 'sync-elsewhere', workspace: { image: 'den/base:latest' }, environment: { services: { api: { command: ['sleep', '1000'], sync: [{ from: '~/src', to: '/srv/app' }] } } } };
    expect((await client.post('/api/v1/templates', { files: { 'template.yaml': JSON.stringify(template) }, activate: true })).status).toBe(201);
    const created = await client.post('/api/v1/workspaces', { name: 'elsewhere', template: 'sync-elsewhere' });
    expect(created.status).toBe(422);
    expect(created.json.error.code).toBe('RUNTIME_CAPABILITY_MISSING');
    expect(created.json.error.message).toContain('environment.services.api.sync[0] syncs ~/src into /srv/app, which the process runtime cannot do');
  });
});
