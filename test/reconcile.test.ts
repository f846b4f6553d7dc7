import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TemplateInput } from '../protocol/template.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { storeDialects } from './support/postgres.ts';
import { waitForWorkspaceReady } from './support/templates.ts';
import { api, setupOwner, type Api, type TestUser } from './support/users.ts';

/**
 * The reconciler against the real server, process runtime and agent: a process that dies after
 * the build (kill -9) shows up as a workspace event and a down health with a sentence, requests
 * that need the agent say so instead of "it reconnects by itself", and `den start` recovers.
 */
const READY_TIMEOUT_MS = 30_000;
/** what the issue promises for detection; a bound to wait for, not a measured time */
const DETECTION_TIMEOUT_MS = 10_000;

const template: TemplateInput = {
  name: 'reconciled',
  workspace: { image: 'den/base:latest' },
  environment: { services: { worker: { image: 'den/base:latest', command: ['sleep', '100000'], ports: [{ port: 7000, name: 'admin' }] } } },
};

const docker = new Dockerode();
const DOCKER_IMAGE = 'den/base:bookworm';
const dockerSkip = await docker.ping().then(() => docker.getImage(DOCKER_IMAGE).inspect().then(() => undefined), () => 'no Docker engine is reachable (run bash test/services/docker.sh)')
  .catch(() => `the image ${DOCKER_IMAGE} is missing (run npm run images)`);
if (dockerSkip) console.warn(`[skip] reconciler on the docker runtime: ${dockerSkip}.`);

/** A listening test server with a signed-in owner and the template pushed. */
function serverWithTemplate(options: Parameters<typeof startTestServer>[0], input: TemplateInput, more: TemplateInput[] = []) {
  const ctx = {} as { server: TestServer; user: TestUser; client: Api };
  beforeAll(async () => {
    ctx.server = await startTestServer({ listen: true, ...options });
    ctx.user = await setupOwner(ctx.server.app);
    ctx.client = api(ctx.server.app, ctx.user.token);
    for (const pushing of [input, ...more]) {
      const pushed = await ctx.client.post('/api/v1/templates', { files: { 'template.yaml': JSON.stringify(pushing) }, activate: true });
      expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    }
  });
  afterAll(async () => {
    await ctx.server?.close();
  });
  const path = (name: string) => `/api/v1/workspaces/${ctx.user.username}/${name}`;
  return {
    ctx,
    path,
    async createRunning(name: string, templateName = input.name): Promise<string> {
      const created = await ctx.client.post('/api/v1/workspaces', { name, template: templateName });
      expect(created.status, JSON.stringify(created.json)).toBe(202);
      await waitForWorkspaceReady(ctx.client, ctx.user.username, name, READY_TIMEOUT_MS);
      return created.json.workspace.id;
    },
    down: (name: string) => waitFor(`workspace ${name} shown down`, async () => {
      const workspace = (await ctx.client.get(path(name))).json;
      return workspace.health?.state === 'down' ? workspace : undefined;
    }, DETECTION_TIMEOUT_MS),
    recovered: (name: string) => waitFor(`workspace ${name} recovered`, async () => {
      const current = (await ctx.client.get(path(name))).json;
      return current.status === 'running' && current.agentState === 'ready' && current.health?.state === 'ok' ? current : undefined;
    }, READY_TIMEOUT_MS),
  };
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe.each(storeDialects)('reconciler on %s', { timeout: 120_000 }, (dialect) => {
  const { ctx, path, createRunning, down, recovered } = serverWithTemplate(
    { dialect, reconcile: { maxRestarts: 1, restartBackoffMs: 100 } }, template, [{ ...template, name: 'restarting', lifecycle: { restart: 'on-failure' } }]);
  let server: TestServer;
  let user: TestUser;
  let client: Api;
  beforeAll(() => {
    ({ server, user, client } = ctx);
  });

  /** kill -9 of a tracked process group, by the pid the process runtime keeps in its state file */
  function killTracked(workspaceId: string, which: (state: any) => { pid: number }): void {
    const state = JSON.parse(readFileSync(join(server.dataDir, 'workspaces', workspaceId, 'state.json'), 'utf8'));
    process.kill(-which(state).pid, 'SIGKILL');
  }

  it('shows a workspace whose agent was killed as down with an event, refuses its terminals with the truth, and `den start` recovers it', async () => {
    const id = await createRunning('agent-kill');
    killTracked(id, (state) => state.agent);

    const workspace = await down('agent-kill');
    expect(workspace.status).toBe('running');
    expect(workspace.health.message).toMatch(/^The agent of workspace 'owner\/agent-kill' exited at \d\d:\d\d:\d\d UTC \(killed by signal SIGKILL\)\.$/);
    expect(Date.parse(workspace.health.at)).not.toBeNaN();
    const events = (await client.get(`${path('agent-kill')}/events`)).json.events;
    expect(events[0]).toMatchObject({ kind: 'agent_exited', message: workspace.health.message, detail: { signal: 'SIGKILL', subject: { type: 'agent' } } });
    // den stops watching after the first failure: the service's state is not claimed either way
    expect(workspace.services).toEqual([expect.objectContaining({ name: 'worker', state: 'unknown', message: `Not watched since the workspace went down: ${workspace.health.message}` })]);

    const terminals = await client.get(`${path('agent-kill')}/terminals`);
    expect(terminals.status).toBe(409);
    expect(terminals.json.error.code).toBe('WORKSPACE_DOWN');
    expect(terminals.json.error.message).toBe(`${workspace.health.message} Start it again with \`den start agent-kill\`.`);

    const started = await client.post(`${path('agent-kill')}/start`, {});
    expect(started.status, JSON.stringify(started.json)).toBe(202);
    expect((await recovered('agent-kill')).health.message).toBe('Workspace \'owner/agent-kill\' is running again since build #2.');
    expect((await client.get(`${path('agent-kill')}/terminals`)).status).toBe(200);
    expect((await client.get(`${path('agent-kill')}/events`)).json.events[0].kind).toBe('workspace_recovered');
  });

  it('shows a workspace whose service process was killed as down with an event naming the service', async () => {
    const id = await createRunning('service-kill');
    const before = (await client.get(path('service-kill'))).json;
    expect(before.services).toEqual([{ name: 'worker', state: 'running', message: null, since: expect.any(String), ports: [{ port: 7000, name: 'admin', address: expect.stringMatching(/^[\w.-]+:\d+$/) }], agent: false }]);
    killTracked(id, (state) => state.services.worker);

    const workspace = await down('service-kill');
    expect(workspace.health.message).toMatch(/^Service worker of workspace 'owner\/service-kill' exited at .* \(killed by signal SIGKILL\)\.$/);
    const events = (await client.get(`${path('service-kill')}/events`)).json.events;
    expect(events[0]).toMatchObject({ kind: 'service_exited', detail: { subject: { type: 'service', name: 'worker' } } });
    // the service itself is down, with the same sentence and the time of the event
    expect(workspace.services).toEqual([expect.objectContaining({ name: 'worker', state: 'down', message: workspace.health.message, since: events[0].ts })]);

    const started = await client.post(`${path('service-kill')}/start`, {});
    expect(started.status, JSON.stringify(started.json)).toBe(202);
    await recovered('service-kill');
    // a later start build begins a new watch: the old death no longer counts
    expect((await client.get(path('service-kill'))).json.services).toEqual([expect.objectContaining({ name: 'worker', state: 'running', message: null })]);
  });

  it('starts a workspace whose template asks for restart on failure again by itself, and gives up after the allowed number', async () => {
    const id = await createRunning('phoenix', 'restarting');
    killTracked(id, (state) => state.agent);
    const back = await recovered('phoenix');
    expect(back.latestBuild).toMatchObject({ number: 2, transition: 'start', state: 'succeeded' });
    const kinds = (await client.get(`${path('phoenix')}/events`)).json.events.map((e: any) => e.kind);
    expect(kinds.slice(0, 3)).toEqual(['workspace_recovered', 'workspace_auto_restarted', 'agent_exited']);
    expect((await client.get(`${path('phoenix')}/builds/2`)).json.reason).toBe('auto-restart');

    // a second failure within the window: one restart was allowed, so den says it stops trying
    killTracked(id, (state) => state.agent);
    await down('phoenix');
    const gaveUp = await waitFor('giving up', async () => {
      const events = (await client.get(`${path('phoenix')}/events`)).json.events;
      return events.find((e: any) => e.kind === 'workspace_auto_restart_given_up');
    }, DETECTION_TIMEOUT_MS);
    expect(gaveUp.message).toMatch(/^den started workspace 'owner\/phoenix' again 1 time within 10 minutes and it failed each time, so it stopped trying\./);
    expect((await client.get(path('phoenix'))).json.latestBuild.number).toBe(2);
  });

  it('still refuses to start a running workspace that is not down', async () => {
    await createRunning('healthy');
    const started = await client.post(`${path('healthy')}/start`, {});
    expect(started.status).toBe(409);
    expect(started.json.error.code).toBe('WORKSPACE_ALREADY_IN_STATE');
  });

  it('collects the runtime objects of a workspace that no longer exists, and nothing else', async () => {
    const id = await createRunning('collected');
    const kept = await createRunning('kept');
    // deleted in the store without den's delete build having removed its processes (a restore
    // from an older backup, a script, a delete build that died between the two)
    await server.store.db.updateTable('workspaces').set({ status: 'deleted', deleted_at: new Date().toISOString() }).where('id', '=', id).execute();
    const removed = await server.den.reconciler.collectGarbage();
    expect(removed).toEqual([id]);
    expect(await server.den.driver.listWorkspaceIds()).toContain(kept);
    expect(await server.den.driver.listWorkspaceIds()).not.toContain(id);
  });
});

describe.skipIf(dockerSkip !== undefined)('reconciler on the docker runtime', { timeout: 180_000 }, () => {
  const { ctx, path, createRunning, down, recovered } = serverWithTemplate({
    // an instance of its own: the engine is shared with other test files and other dens
    driver: async (config) => {
      const { createDockerDriver } = await import('../server/runtimes/docker/driver.ts');
      return createDockerDriver({
        log: pino({ level: 'silent' }), docker: docker as never, agentBundleDir: join(mkdtempSync(join(tmpdir(), 'den-reconcile-docker-')), 'agent'),
        stopGraceSeconds: 2, instance: `den-test-${randomUUID().slice(0, 8)}`,
      });
    },
  }, { name: 'reconciled-docker', workspace: { image: DOCKER_IMAGE } });

  it('shows a workspace whose container was killed as down with an event, and `den start` recovers it', async () => {
    const id = await createRunning('container-kill');
    const [container] = await docker.listContainers({ filters: JSON.stringify({ label: [`den.workspace.id=${id}`, 'den.kind=workspace'] }) });
    await docker.getContainer(container.Id).kill({ signal: 'SIGKILL' });

    const workspace = await down('container-kill');
    expect(workspace.health.message).toMatch(/^The container of workspace 'owner\/container-kill' exited at \d\d:\d\d:\d\d UTC \(killed by signal 9\)\.$/);
    const events = (await ctx.client.get(`${path('container-kill')}/events`)).json.events;
    expect(events[0]).toMatchObject({ kind: 'workspace_exited', detail: { exitCode: 137 } });

    expect((await ctx.client.post(`${path('container-kill')}/start`, {})).status).toBe(202);
    await recovered('container-kill');
  });
});
