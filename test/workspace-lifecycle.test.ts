import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { TemplateInput } from '../protocol/template.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { storeDialects } from './support/postgres.ts';
import { api, createUserWithToken, setupOwner, type Api, type TestUser } from './support/users.ts';

const BUILD_TIMEOUT_MS = 30_000;

const starter: TemplateInput = {
  name: 'lifecycle',
  parameters: [
    { name: 'greeting', type: 'string', default: 'hi' },
    { name: 'disk', type: 'number', default: 10, mutable: false },
    { name: 'size', type: 'number', default: 2, options: [1, 2, 4] },
  ],
  workspace: {
    image: 'den/base:latest',
    env: { GREETING: '${{ params.greeting }}' },
    startup: [{ name: 'hello', run: 'echo "startup says $GREETING"' }],
  },
};

describe.each(storeDialects)('workspace lifecycle on %s', { timeout: 120_000 }, (dialect) => {
  let server: TestServer;
  let owner: TestUser;
  let member: TestUser;
  let other: TestUser;
  let as: Api;

  beforeAll(async () => {
    server = await startTestServer({ dialect, listen: true });
    owner = await setupOwner(server.app);
    member = await createUserWithToken(server.app, owner.token, 'member');
    other = await createUserWithToken(server.app, owner.token, 'member');
    await pushTemplate(api(server.app, owner.token), starter);
    as = api(server.app, member.token);
  });
  afterAll(async () => {
    await server?.close();
  });

  const path = (name: string, user = member) => `/api/v1/workspaces/${user.username}/${name}`;

  async function waitForStatus(name: string, status: string, user = member) {
    const deadline = Date.now() + BUILD_TIMEOUT_MS;
    let last: any;
    while (Date.now() < deadline) {
      last = (await api(server.app, user.token).get(path(name, user))).json;
      if (last?.status === status && last.latestBuild?.state !== 'queued' && last.latestBuild?.state !== 'running') return last;
      if (last?.status === 'failed') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`workspace ${name} did not reach ${status} within ${BUILD_TIMEOUT_MS} ms; last seen ${JSON.stringify(last)}`);
  }

  it('creates a workspace that becomes running with its agent ready, and records the build with step timings and logs', async () => {
    const created = await as.post('/api/v1/workspaces', { name: 'demo', template: 'lifecycle', params: { greeting: 'hello' } });
    expect(created.status).toBe(202);
    expect(created.json.workspace).toMatchObject({ name: 'demo', owner: member.username, template: 'lifecycle', templateVersion: 1 });
    expect(['pending', 'starting']).toContain(created.json.workspace.status);
    expect(created.json.build).toMatchObject({ number: 1, transition: 'start', reason: 'create', initiator: member.username });

    const running = await waitForStatus('demo', 'running');
    expect(running.agentState).toBe('ready');
    expect(running.params).toEqual({ greeting: 'hello', disk: 10, size: 2 });

    const build = (await as.get(`${path('demo')}/builds/1`)).json;
    expect(build.state).toBe('succeeded');
    expect(build.steps.map((s: any) => s.name)).toEqual(['resolve', 'endpoints', 'plan', 'apply', 'agent', 'environment']);
    for (const step of build.steps) expect(step).toMatchObject({ state: 'succeeded', durationMs: expect.any(Number) });

    const logs = await as.get(`${path('demo')}/builds/1/logs`);
    expect(logs.headers['content-type']).toContain('application/x-ndjson');
    const text = await rawText(server, `${path('demo')}/builds/1/logs`, member.token);
    const entries = text.trim().split('\n').map((line) => JSON.parse(line));
    expect(entries.some((e: any) => e.line === '==> apply')).toBe(true);
    expect(entries.some((e: any) => /^<== agent succeeded in \d+ ms$/.test(e.line))).toBe(true);
    expect(entries.some((e: any) => e.line.includes('startup says hello'))).toBe(true);
  });

  it('stops, starts, restarts and deletes, each as a build', async () => {
    const stop = await as.post(`${path('demo')}/stop`);
    expect(stop.status).toBe(202);
    expect(stop.json.build).toMatchObject({ transition: 'stop', number: 2 });
    await waitForStatus('demo', 'stopped');

    const again = await as.post(`${path('demo')}/stop`);
    expect(again).toMatchObject({ status: 409, json: { error: { code: 'WORKSPACE_ALREADY_IN_STATE' } } });

    expect((await as.post(`${path('demo')}/start`)).status).toBe(202);
    await waitForStatus('demo', 'running');

    const restart = await as.post(`${path('demo')}/restart`);
    expect(restart.json.build).toMatchObject({ transition: 'stop', reason: 'restart' });
    const deadline = Date.now() + BUILD_TIMEOUT_MS;
    let builds: any[] = [];
    while (Date.now() < deadline) {
      builds = (await as.get(`${path('demo')}/builds`)).json.builds;
      if (builds[0].reason === 'restart' && builds[0].transition === 'start' && builds[0].state === 'succeeded') break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(builds.slice(0, 2).map((b) => [b.transition, b.reason, b.state])).toEqual([['start', 'restart', 'succeeded'], ['stop', 'restart', 'succeeded']]);
    await waitForStatus('demo', 'running');

    const deleted = await as.delete(path('demo'));
    expect(deleted.status).toBe(202);
    expect(deleted.json.build.transition).toBe('delete');
    const until = Date.now() + BUILD_TIMEOUT_MS;
    while ((await as.get(path('demo'))).status !== 404) {
      if (Date.now() > until) throw new Error('the workspace was not deleted in time');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect((await as.get(path('demo'))).json.error.code).toBe('WORKSPACE_NOT_FOUND');
    // the name is free again
    const reused = await as.post('/api/v1/workspaces', { name: 'demo', template: 'lifecycle' });
    expect(reused.status).toBe(202);
    await waitForStatus('demo', 'running');
    await as.delete(path('demo'));
  });

  it('answers BUILD_IN_PROGRESS to all but one of concurrent requests', async () => {
    await as.post('/api/v1/workspaces', { name: 'racy', template: 'lifecycle' });
    const during = await as.post(`${path('racy')}/stop`);
    expect(during).toMatchObject({ status: 409, json: { error: { code: 'BUILD_IN_PROGRESS' } } });
    await waitForStatus('racy', 'running');

    const answers = await Promise.all(Array.from({ length: 6 }, () => as.post(`${path('racy')}/stop`)));
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses).toEqual([202, 409, 409, 409, 409, 409]);
    expect(answers.filter((a) => a.status === 409).every((a) => a.json.error.code === 'BUILD_IN_PROGRESS')).toBe(true);
    await waitForStatus('racy', 'stopped');
    await as.delete(path('racy'));
  });

  it('rejects names that are not DNS-safe labels of 1 to 32 characters with WORKSPACE_NAME_INVALID', async () => {
    for (const name of ['Bad', 'under_score', '-lead', 'trail-', '', 'a'.repeat(33), 'dots.in.name']) {
      const response = await as.post('/api/v1/workspaces', { name, template: 'lifecycle' });
      expect(response.status, name).toBe(400);
      expect(response.json.error.code).toBe('WORKSPACE_NAME_INVALID');
      expect(response.json.error.message).toMatch(/lowercase letters, digits and '-'/);
    }
    expect((await as.get('/api/v1/workspaces')).json.workspaces.map((w: any) => w.name)).not.toContain('Bad');
  });

  it('names every parameter problem and creates nothing', async () => {
    const response = await as.post('/api/v1/workspaces', { name: 'params', template: 'lifecycle', params: { size: 3, disk: 'big', nope: 1 } });
    expect(response.status).toBe(400);
    expect(response.json.error.code).toBe('WORKSPACE_PARAMETERS_INVALID');
    const fields = response.json.error.validations.map((v: any) => v.field).sort();
    expect(fields).toEqual(['params.disk', 'params.nope', 'params.size']);
    expect((await as.get(path('params'))).status).toBe(404);
  });

  it('refuses, before any build, a template that needs what the runtime lacks, naming the feature and the runtime', async () => {
    await pushTemplate(api(server.app, owner.token), {
      name: 'image-only', workspace: { image: 'den/base:latest' },
      environment: { services: { db: { image: 'den/postgres:15', ports: [{ port: 5432 }] } } },
    });
    const response = await as.post('/api/v1/workspaces', { name: 'needs-images', template: 'image-only' });
    expect(response.status).toBe(422);
    expect(response.json.error.code).toBe('RUNTIME_CAPABILITY_MISSING');
    expect(response.json.error.message).toContain('environment.services.db is given only as an image, without a command, which the process runtime does not support (serviceImages).');
    expect(response.json.error.validations).toEqual([expect.objectContaining({ field: 'environment.services.db' })]);
    expect((await as.get(path('needs-images'))).status).toBe(404);
    const builds = await server.store.db.selectFrom('builds').innerJoin('workspaces', 'workspaces.id', 'builds.workspace_id')
      .select('builds.id').where('workspaces.name', '=', 'needs-images').execute();
    expect(builds).toEqual([]);
  });

  it('runs the startup scripts again when a workspace whose startup failed is started again', async () => {
    await pushTemplate(api(server.app, owner.token), {
      name: 'flaky-startup', workspace: {
        image: 'den/base:latest',
        startup: [{ name: 'once', run: 'if [ -e "$HOME/.tried" ]; then echo "second try works"; else touch "$HOME/.tried"; echo "first try fails"; exit 3; fi' }],
      },
    });
    expect((await as.post('/api/v1/workspaces', { name: 'flaky', template: 'flaky-startup' })).status).toBe(202);
    const buildEnded = async (number: number) => {
      const deadline = Date.now() + BUILD_TIMEOUT_MS;
      for (;;) {
        const build = (await as.get(`${path('flaky')}/builds/${number}`)).json;
        if (build.state === 'succeeded' || build.state === 'failed' || Date.now() > deadline) return build.state;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    };
    expect(await buildEnded(1)).toBe('failed');
    expect((await as.get(path('flaky'))).json).toMatchObject({ status: 'failed', agentState: 'start_error' });
    // the workspace stays `failed` until the retry's build is claimed, so wait for the build itself
    const retry = await as.post(`${path('flaky')}/start`);
    expect(retry.status).toBe(202);
    expect(await buildEnded(retry.json.build.number)).toBe('succeeded');
    expect((await as.get(path('flaky'))).json).toMatchObject({ status: 'running', agentState: 'ready' });
    const text = await rawText(server, `${path('flaky')}/builds/${retry.json.build.number}/logs`, member.token);
    expect(text).toContain('second try works');
    await as.delete(path('flaky'));
  });

  it('answers WORKSPACE_EXISTS for a second workspace with the same name', async () => {
    expect((await as.post('/api/v1/workspaces', { name: 'twin', template: 'lifecycle' })).status).toBe(202);
    const second = await as.post('/api/v1/workspaces', { name: 'twin', template: 'lifecycle' });
    expect(second).toMatchObject({ status: 409, json: { error: { code: 'WORKSPACE_EXISTS' } } });
    await waitForStatus('twin', 'running');
  });

  it('moves a workspace to the active version on update, enforcing immutable parameters', async () => {
    await pushTemplate(api(server.app, owner.token), { ...starter, description: 'version 2' });
    expect((await as.get(path('twin'))).json).toMatchObject({ templateVersion: 1, outdated: true });
    const response = await as.post(`${path('twin')}/update`, { params: { disk: 20 } });
    expect(response.status).toBe(400);
    expect(response.json.error.validations[0].field).toBe('params.disk');
    const ok = await as.post(`${path('twin')}/update`, { params: { greeting: 'changed' } });
    expect(ok.status).toBe(202);
    expect(ok.json.build).toMatchObject({ transition: 'start', reason: 'update' });
    const running = await waitForStatus('twin', 'running');
    expect(running).toMatchObject({ templateVersion: 2, outdated: false, params: { greeting: 'changed', disk: 10 } });
    await as.delete(path('twin'));
  });

  it('shows workspaces only to their owner and the owner role', async () => {
    await as.post('/api/v1/workspaces', { name: 'private', template: 'lifecycle' });
    expect((await api(server.app, other.token).get(path('private'))).status).toBe(404);
    expect((await api(server.app, other.token).post(`${path('private')}/stop`)).status).toBe(404);
    expect((await api(server.app, other.token).get('/api/v1/workspaces')).json.workspaces).toEqual([]);
    expect((await api(server.app, other.token).get('/api/v1/workspaces?all=1')).status).toBe(403);
    expect((await api(server.app, owner.token).get(path('private'))).status).toBe(200);
    const all = (await api(server.app, owner.token).get('/api/v1/workspaces?all=1')).json;
    expect(all.workspaces.map((w: any) => `${w.owner}/${w.name}`)).toContain(`${member.username}/private`);
    const byOwner = (await api(server.app, owner.token).get(`/api/v1/workspaces?owner=${member.username}&limit=1`)).json;
    expect(byOwner).toMatchObject({ limit: 1, offset: 0 });
    expect(byOwner.workspaces).toHaveLength(1);
    expect(byOwner.total).toBeGreaterThanOrEqual(1);
    await waitForStatus('private', 'running');
    await as.delete(path('private'));
  });

  it('lets the owner role create a workspace for another user, and no one else', async () => {
    const denied = await api(server.app, other.token).post('/api/v1/workspaces', { name: 'gift', template: 'lifecycle', owner: member.username });
    expect(denied.status).toBe(403);
    const made = await api(server.app, owner.token).post('/api/v1/workspaces', { name: 'gift', template: 'lifecycle', owner: member.username });
    expect(made.status).toBe(202);
    expect(made.json.workspace.owner).toBe(member.username);
    await waitForStatus('gift', 'running');
    await as.delete(path('gift'));
  });

  it('streams a build log live until the build finishes', async () => {
    const created = await as.post('/api/v1/workspaces', { name: 'follow', template: 'lifecycle' });
    expect(created.status).toBe(202);
    const text = await rawText(server, `${path('follow')}/builds/1/logs?follow=1`, member.token);
    const entries = text.trim().split('\n').map((line) => JSON.parse(line));
    expect(entries.at(-1).line).toMatch(/^Build #1 succeeded/);
    const sse = await rawText(server, `${path('follow')}/builds/1/logs?follow=1&format=sse`, member.token);
    expect(sse).toContain('event: end');
    await as.delete(path('follow'));
  });
});

async function rawText(server: TestServer, url: string, token: string): Promise<string> {
  const response = await fetch(`${server.url}${url}`, { headers: { authorization: `Bearer ${token}` } });
  return response.text();
}

async function pushTemplate(admin: Api, template: TemplateInput): Promise<void> {
  const pushed = await admin.post('/api/v1/templates', { files: { 'template.yaml': stringify(template) }, activate: true });
  if (pushed.status !== 201) throw new Error(`pushing template ${template.name} failed: ${pushed.status} ${JSON.stringify(pushed.json)}`);
}
