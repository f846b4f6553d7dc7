import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { TemplateInput } from '../protocol/template.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { storeDialects } from './support/postgres.ts';
import { api, createUserWithToken, setupOwner, type Api, type TestUser } from './support/users.ts';

/** How long a build may take to reach a state (start, stop) on the process runtime. */
const BUILD_TIMEOUT_MS = 30_000;
const POLL_MS = 50;
const LEASE_SECONDS = 5;

// `hold` keeps a start build in its `agent` step: the agent reports ready only after its
// blocking startup script, which sleeps that long. Ephemeral, so the next start has none.
const holding: TemplateInput = {
  name: 'holding',
  parameters: [{ name: 'hold', type: 'number', default: 0, ephemeral: true }],
  workspace: {
    image: 'den/base:latest',
    startup: [{ name: 'hold', run: 'sleep ${{ params.hold }}' }],
  },
};

describe.each(storeDialects)('canceling builds on %s', { timeout: 120_000 }, (dialect) => {
  let server: TestServer;
  let member: TestUser;
  let as: Api;

  beforeAll(async () => {
    // One worker: while it holds one build, the next stays queued. A short lease: a cancel
    // recorded by another replica is seen at the next renewal (every third of it).
    server = await startTestServer({ dialect, listen: true, config: { buildWorkers: 1, buildLeaseSeconds: LEASE_SECONDS } });
    const owner = await setupOwner(server.app);
    member = await createUserWithToken(server.app, owner.token, 'member');
    const pushed = await api(server.app, owner.token).post('/api/v1/templates', { files: { 'template.yaml': stringify(holding) }, activate: true });
    expect(pushed.status).toBe(201);
    as = api(server.app, member.token);
  });
  afterAll(async () => {
    await server?.close();
  });

  const path = (name: string) => `/api/v1/workspaces/${member.username}/${name}`;

  async function waitFor<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + BUILD_TIMEOUT_MS;
    while (Date.now() < deadline) {
      const found = await probe();
      if (found !== undefined) return found;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
    throw new Error(`${what} did not happen within ${BUILD_TIMEOUT_MS} ms`);
  }

  const settled = (name: string, status: string) => waitFor(`${name} becoming ${status}`, async () => {
    const workspace = (await as.get(path(name))).json;
    const building = ['queued', 'running'].includes(workspace.latestBuild?.state);
    return workspace.status === status && !building ? workspace : undefined;
  });

  it('cancels a queued build without running it and a running one through its signal; both workspaces start again', async () => {
    // busy: a start build held in its agent step, holding the only worker
    expect((await as.post('/api/v1/workspaces', { name: 'busy', template: 'holding', params: { hold: 300 } })).status).toBe(202);
    await waitFor('the busy build reaching its agent step', async () =>
      (await rawText(server, `${path('busy')}/builds/1/logs`, member.token)).includes('"line":"==> agent"') ? true : undefined);

    // waiting: queued behind it, canceled before any worker takes it
    const waiting = await as.post('/api/v1/workspaces', { name: 'waiting', template: 'holding' });
    expect(waiting.json.build.state).toBe('queued');
    const canceledQueued = await as.post(`${path('waiting')}/cancel`);
    expect(canceledQueued.status).toBe(202);
    expect(canceledQueued.json.build).toMatchObject({ number: 1, state: 'canceled', error: `Canceled by ${member.username} before it started.` });
    expect(canceledQueued.json.build.startedAt).toBeNull();
    // a first build that never ran leaves nothing in the runtime: the workspace is stopped
    expect(canceledQueued.json.workspace.status).toBe('stopped');
    expect((await as.get(`${path('waiting')}/builds/1`)).json).toMatchObject({ state: 'canceled', steps: [] });

    // busy: the running build is aborted, its step ends, the build ends canceled
    const canceledRunning = await as.post(`${path('busy')}/cancel`);
    expect(canceledRunning.status).toBe(202);
    const busy = await settled('busy', 'failed');
    expect(busy.latestBuild).toMatchObject({ number: 1, state: 'canceled' });
    expect(busy.latestBuild.error).toContain(`Canceled by ${member.username}`);
    const build = (await as.get(`${path('busy')}/builds/1`)).json;
    expect(build.steps.at(-1)).toMatchObject({ name: 'agent', state: 'failed' });
    const log = await rawText(server, `${path('busy')}/builds/1/logs`, member.token);
    expect(log).toContain(`Canceled by ${member.username}`);
    expect(log).toMatch(/Build #1 was canceled after/);

    // nothing left to cancel
    const nothing = await as.post(`${path('busy')}/cancel`);
    expect(nothing).toMatchObject({ status: 409, json: { error: { code: 'BUILD_NOT_IN_PROGRESS' } } });
    expect(nothing.json.error.message).toMatch(/has no queued or running build to cancel \(it is failed\)/);

    // both start again (and the freed worker runs them)
    expect((await as.post(`${path('waiting')}/start`)).status).toBe(202);
    expect((await settled('waiting', 'running')).agentState).toBe('ready');
    expect((await as.post(`${path('busy')}/start`)).status).toBe(202);
    expect((await settled('busy', 'running')).agentState).toBe('ready');

    // and stop and delete as usual
    expect((await as.post(`${path('busy')}/stop`)).status).toBe(202);
    await settled('busy', 'stopped');
    expect((await as.delete(path('busy'))).status).toBe(202);
    expect((await as.delete(path('waiting'))).status).toBe(202);
  });

  it('cancels a running build held by another replica when that replica next renews its lease', async () => {
    // a second replica over the same store, with no build workers: it can only record the cancel
    const replica = await startTestServer({
      dataDir: server.dataDir, databaseUrl: server.config.databaseUrl, startWorkers: false,
      config: { buildLeaseSeconds: LEASE_SECONDS },
    });
    try {
      expect((await as.post('/api/v1/workspaces', { name: 'remote', template: 'holding', params: { hold: 300 } })).status).toBe(202);
      await waitFor('the remote build reaching its agent step', async () =>
        (await rawText(server, `${path('remote')}/builds/1/logs`, member.token)).includes('"line":"==> agent"') ? true : undefined);
      const requested = await api(replica.app, member.token).post(`${path('remote')}/cancel`);
      expect(requested.status).toBe(202);
      expect(requested.json.build.state).toBe('running');
      const remote = await settled('remote', 'failed');
      expect(remote.latestBuild).toMatchObject({ state: 'canceled', error: expect.stringContaining(`Canceled by ${member.username}`) });
      expect((await as.delete(path('remote'))).status).toBe(202);
    } finally {
      await replica.close();
    }
  });
});

async function rawText(server: TestServer, url: string, token: string): Promise<string> {
  const response = await fetch(`${server.url}${url}`, { headers: { authorization: `Bearer ${token}` } });
  return response.text();
}
