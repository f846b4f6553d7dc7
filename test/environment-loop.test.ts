import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TemplateInput } from '../protocol/template.ts';
import { runDen, type DenResult } from './support/den-cli.ts';
import { dockerSkipReason } from './support/docker.ts';
import { execInWorkspace } from './support/exec.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { reApply, waitForWorkspaceReady } from './support/templates.ts';
import { api, createUserWithToken, setupOwner, type Api, type TestUser } from './support/users.ts';

/**
 * The environment dev loop on the real Docker engine, through the whole server (API, build
 * worker, docker driver, agents beside services) and the real `den` CLI: a task runs once per
 * version and again when its input file changes; an unchanged re-up does no work; a test result
 * is cached by version; a failing test's exit status is den's; logs come from two services with
 * prefixes and times; a teammate sees the environment read-only (and nothing else), audited,
 * while a non-teammate gets the same 404 as for a missing workspace.
 */
const READY_TIMEOUT_MS = 90_000;
const BUILD_TIMEOUT_MS = 90_000;
const CLI_TIMEOUT_MS = 60_000;
/** the routes recheck a teammate's grant every 5 s */
const GRANT_CUT_TIMEOUT_MS = 12_000;

const docker = new Dockerode();
const WORKSPACE_IMAGE = 'den/base:bookworm';
/** without den's agent: the service's agent comes from the read-only bundle volume */
const SERVICE_IMAGE = 'den/base-os:bookworm';
const dockerSkip = await dockerSkipReason(docker, [WORKSPACE_IMAGE, SERVICE_IMAGE]);
if (dockerSkip) console.warn(`[skip] the environment loop on docker: ${dockerSkip}.`);

const TEMPLATE: TemplateInput = {
  name: 'loop',
  workspace: { image: WORKSPACE_IMAGE },
  environment: {
    services: {
      db: { image: SERVICE_IMAGE, command: ['sh', '-c', 'echo "db up"; while :; do echo "db tick"; sleep 1; done'] },
      api: {
        image: SERVICE_IMAGE,
        command: ['sh', '-c', 'echo "api up"; while :; do echo "api tick" >&2; sleep 1; done'],
        env: { GREETING: 'from the api service' },
        agent: true,
        dependsOn: ['db'],
      },
    },
    tasks: {
      // each run leaves a line in the service's container, so the test counts real runs there too
      migrate: { service: 'api', run: 'echo "migrating $GREETING"; echo run >> /tmp/migrations', inputs: ['~/app/migrations'] },
    },
    tests: {
      pass: { service: 'api', run: 'echo "test sees $GREETING"; test -f /tmp/migrations', dependsOn: ['migrate'] },
      fail: { service: 'api', run: 'echo "about to fail" >&2; exit 3' },
    },
  },
};

describe('the environment loop on the docker runtime', { timeout: 300_000 }, () => {
  if (dockerSkip) {
    // reported as skipped with the reason printed above, so CI (which forbids skips) notices
    it.skip(`needs Docker: ${dockerSkip}`);
    return;
  }
  let server: TestServer;
  let owner: TestUser;
  let mate: TestUser;
  let stranger: TestUser;
  let client: Api;
  let workspaceId: string;
  const homes: string[] = [];
  const WS = 'loop1';

  beforeAll(async () => {
    server = await startTestServer({
      listen: true,
      driver: async () => {
        const { createDockerDriver } = await import('../server/runtimes/docker/driver.ts');
        return createDockerDriver({
          log: pino({ level: 'silent' }), docker: docker as never, agentBundleDir: join(mkdtempSync(join(tmpdir(), 'den-env-loop-')), 'agent'),
          stopGraceSeconds: 1, instance: `den-test-${randomUUID().slice(0, 8)}`,
        });
      },
    });
    owner = await setupOwner(server.app, 'lead');
    mate = await createUserWithToken(server.app, owner.token, 'member', 'mate');
    stranger = await createUserWithToken(server.app, owner.token, 'member', 'stranger');
    client = api(server.app, owner.token);
    const pushed = await client.post('/api/v1/templates', { files: { 'template.yaml': JSON.stringify(TEMPLATE) }, activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    const created = await client.post('/api/v1/workspaces', { name: WS, template: 'loop' });
    expect(created.status, JSON.stringify(created.json)).toBe(202);
    workspaceId = created.json.workspace.id;
    await waitForWorkspaceReady(client, owner.username, WS, READY_TIMEOUT_MS);
  });
  afterAll(async () => {
    await server?.den.driver.collectGarbage?.(async () => false);
    await server?.close();
    for (const home of homes) rmSync(home, { recursive: true, force: true });
  });

  const path = `/api/v1/workspaces/lead/${WS}`;

  async function den(args: string[], user: TestUser = owner): Promise<DenResult> {
    const home = mkdtempSync(join(tmpdir(), 'den-env-loop-cli-'));
    homes.push(home);
    return runDen(args, { PATH: process.env.PATH!, HOME: home, XDG_CONFIG_HOME: home, DEN_URL: server.url!, DEN_TOKEN: user.token }, CLI_TIMEOUT_MS);
  }

  /** Re-applies the workspace in place (`den update` to the same version) and returns that build's log. */
  const reUp = () => reApply(server.app, client, owner.token, path, BUILD_TIMEOUT_MS);

  const buildRunsOf = async (name: string) => (await client.get(`${path}/env/runs?kind=task&name=${name}`)).json.runs as { trigger: string; version: string; state: string }[];
  const migrationsInService = async () => (await execInWorkspace(server.den, { workspaceId, agent: 'api' }, ['sh', '-c', 'wc -l < /tmp/migrations'])).stdout.trim();

  it('runs a task once per version: the first start ran it, an unchanged re-up skips it and every service, a changed input runs it again', async () => {
    const first = await buildRunsOf('migrate');
    expect(first).toHaveLength(1);
    expect(first[0]).toMatchObject({ trigger: 'build', state: 'passed' });
    expect(await migrationsInService()).toBe('1');

    const unchanged = await reUp();
    expect(unchanged).toContain(`Task migrate is unchanged (version ${first[0].version}): skipped.`);
    expect(unchanged).toContain('Service db is unchanged and running: skipped.');
    expect(unchanged).toContain('Service api is unchanged and running: skipped.');
    expect(unchanged).toMatch(/Service api: version [0-9a-f]{16}, unchanged\./);
    expect(await buildRunsOf('migrate')).toHaveLength(1);
    expect(await migrationsInService()).toBe('1');

    const wrote = await execInWorkspace(server.den, workspaceId, ['sh', '-c', 'mkdir -p ~/app/migrations && echo "create table t;" > ~/app/migrations/001.sql']);
    expect(wrote.code, wrote.stderr).toBe(0);
    const changed = await reUp();
    expect(changed).toContain('[task migrate] migrating from the api service');
    const after = await buildRunsOf('migrate');
    expect(after).toHaveLength(2);
    expect(after[0].version).not.toBe(first[0].version);
    expect(await migrationsInService()).toBe('2');

    // and once more unchanged: skipped at the new version
    expect(await reUp()).toContain(`Task migrate is unchanged (version ${after[0].version}): skipped.`);
    expect(await migrationsInService()).toBe('2');
  });

  it('`den env run` runs a task on demand, streaming its output, and exits 0', async () => {
    const result = await den(['env', 'run', `lead/${WS}`, 'migrate']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('migrating from the api service');
    expect(result.stderr).toMatch(/Task migrate: passed, version [0-9a-f]{16}/);
  });

  it('caches a passed test by version: shown as cached the second time, run again with --force', async () => {
    const firstRun = await den(['test', `lead/${WS}`, 'pass']);
    expect(firstRun.code, firstRun.stderr).toBe(0);
    expect(firstRun.stdout).toContain('test sees from the api service');
    expect(firstRun.stderr).not.toContain('cached');

    const second = await den(['test', `lead/${WS}`, 'pass']);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toBe('');
    expect(second.stderr).toContain('cached: this version passed before');

    const forced = await server.app.inject({ method: 'POST', url: `${path}/env/tests/pass/run?force=1`, headers: { authorization: `Bearer ${owner.token}` }, payload: {} });
    expect(forced.statusCode).toBe(200);
    const parsed = forced.body.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line));
    expect(parsed).toContainEqual({ type: 'output', stream: 'stdout', line: 'test sees from the api service' });
    expect(parsed.at(-1)).toMatchObject({ type: 'result', cached: false, run: { state: 'passed', exitCode: 0 } });

    const history = await den(['test', `lead/${WS}`, '--history', '--json']);
    expect(history.code, history.stderr).toBe(0);
    const runs = JSON.parse(history.stdout) as { name: string; state: string }[];
    expect(runs.filter((run) => run.name === 'pass')).toHaveLength(2);
  });

  it('exits with a failing test\'s own status, keeps its output, and never caches a failure', async () => {
    for (let attempt = 0; attempt < 2; attempt += 1) {
      const result = await den(['test', `lead/${WS}`, 'fail']);
      expect(result.code).toBe(3);
      expect(result.stderr).toContain('about to fail');
      expect(result.stderr).toContain('failed (exit status 3)');
      expect(result.stderr).not.toContain('cached');
    }
    const { runs } = (await client.get(`${path}/env/runs?kind=test&name=fail`)).json;
    expect(runs).toHaveLength(2);
    const detail = await client.get(`${path}/env/runs/${runs[0].id}`);
    expect(detail.json).toMatchObject({ state: 'failed', exitCode: 3 });
    expect(detail.json.log).toContain('about to fail');
  });

  it('shows the logs of two services with prefixes and times, and follows them', async () => {
    const result = await den(['env', 'logs', `lead/${WS}`, '--tail', '5']);
    expect(result.code, result.stderr).toBe(0);
    const all = `${result.stdout}${result.stderr}`;
    expect(result.stdout).toMatch(/^db\s*\| \d{4}-\d\d-\d\dT[\d:.]+Z db tick$/m);
    // the api service writes to stderr: den keeps the stream
    expect(result.stderr).toMatch(/^api\s*\| \d{4}-\d\d-\d\dT[\d:.]+Z api tick$/m);
    expect(all.split('\n').filter(Boolean).length).toBeLessThanOrEqual(10);

    const abort = new AbortController();
    const response = await fetch(`${server.url}${path}/env/logs?service=api&service=db&tail=0&follow=1`, {
      headers: { authorization: `Bearer ${owner.token}`, connection: 'close' }, signal: abort.signal,
    });
    expect(response.status).toBe(200);
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    const seen = new Set<string>();
    let buffer = '';
    const deadline = Date.now() + 15_000;
    while (seen.size < 2 && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      for (const line of buffer.split('\n').slice(0, -1)) if (line.trim()) seen.add(JSON.parse(line).service);
      buffer = buffer.slice(buffer.lastIndexOf('\n') + 1);
    }
    await reader.cancel();
    abort.abort();
    expect([...seen].sort()).toEqual(['api', 'db']);
  });

  it('gives a teammate the environment read-only, audited, and a non-teammate the missing-workspace 404', async () => {
    const asMate = api(server.app, mate.token);
    const asStranger = api(server.app, stranger.token);
    const missing = await asStranger.get('/api/v1/workspaces/lead/no-such-workspace/env');
    const before = await asMate.get(`${path}/env`);
    expect(before.status).toBe(404);
    expect(before.json.error.code).toBe('WORKSPACE_NOT_FOUND');
    expect(missing.status).toBe(404);
    expect(missing.json.error.code).toBe('WORKSPACE_NOT_FOUND');

    const granted = await den(['env', 'grant', WS, 'mate']);
    expect(granted.code, granted.stderr).toBe(0);
    expect((await client.get(`${path}/env/grants`)).json.grants).toEqual([expect.objectContaining({ user: 'mate', grantedBy: 'lead' })]);

    const shown = await den(['env', 'show', `lead/${WS}`], mate);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toContain('read-only: you are a teammate');
    expect(shown.stdout).toMatch(/api\s+running\s+[0-9a-f]{16}/);
    const view = await asMate.get(`${path}/env`);
    expect(view.json).toMatchObject({ viewer: 'teammate', workspace: `lead/${WS}` });
    expect(view.json.services.map((s: { name: string }) => s.name).sort()).toEqual(['api', 'db']);
    const logs = await asMate.get(`${path}/env/logs?service=db&tail=2`);
    expect(logs.status).toBe(200);
    expect(String(logs.json ?? '')).not.toContain('error');

    // everything else of the workspace stays closed to the teammate: as if it did not exist
    const closed: [string, string, unknown?][] = [
      ['GET', path],
      ['GET', `${path}/terminal`],
      ['GET', `${path}/exec`],
      ['GET', `${path}/terminals`],
      ['GET', `${path}/terminals?service=api`],
      ['GET', `${path}/ssh-sessions`],
      ['GET', `${path}/ssh`],
      ['GET', `${path}/port-forward`],
      ['GET', `${path}/ports`],
      ['GET', `${path}/events`],
      ['GET', `${path}/builds`],
      ['GET', `${path}/services/api/logs`],
      ['GET', `${path}/env/runs`],
      ['GET', `${path}/env/grants`],
      ['POST', `${path}/env/tasks/migrate/run`, {}],
      ['POST', `${path}/env/tests/pass/run`, {}],
      ['PUT', `${path}/env/grants/stranger`, {}],
      ['POST', `${path}/stop`, {}],
    ];
    for (const [method, url, body] of closed) {
      const answer = await asMate.request(method, url, body);
      expect({ url: `${method} ${url}`, status: answer.status, code: answer.json?.error?.code }).toEqual({ url: `${method} ${url}`, status: 404, code: 'WORKSPACE_NOT_FOUND' });
    }
    // exec over the real websocket path, as `den exec` does
    const exec = await den(['exec', `lead/${WS}`, '--', 'true'], mate);
    expect(exec.code).not.toBe(0);
    expect(exec.stderr).toContain("There is no workspace 'lead/loop1'");

    const events = (await client.get(`${path}/events`)).json.events as { kind: string; message: string }[];
    expect(events.filter((event) => event.kind === 'environment.viewed').map((event) => event.message)).toEqual(expect.arrayContaining([
      'Teammate mate viewed the environment: services and status.',
      'Teammate mate viewed the environment: service logs.',
    ]));

    const stranger404 = await asStranger.get(`${path}/env`);
    expect(stranger404.status).toBe(404);
    expect(stranger404.json.error.code).toBe('WORKSPACE_NOT_FOUND');

    // a followed log outlives no revocation: it ends with the coded error within the recheck period
    const following = await fetch(`${server.url}${path}/env/logs?follow=1&tail=0`, { headers: { authorization: `Bearer ${mate.token}`, connection: 'close' } });
    expect(following.status).toBe(200);
    const revoked = await den(['env', 'revoke', WS, 'mate']);
    expect(revoked.code, revoked.stderr).toBe(0);
    const ended = await Promise.race([
      following.text(),
      new Promise<string>((_, reject) => setTimeout(() => reject(new Error('the teammate\'s followed log did not end after the revocation')), GRANT_CUT_TIMEOUT_MS)),
    ]);
    expect(ended.trim().split('\n').at(-1)).toContain('"code":"WORKSPACE_NOT_FOUND"');
    expect((await asMate.get(`${path}/env`)).status).toBe(404);
  });

  it('ends a group member\'s followed `den env logs -f` when they leave the group, and a member\'s fetch when the group\'s grant is revoked', async () => {
    const asAdmin = client; // lead is den's first user, so an owner: it sets groups
    expect((await asAdmin.post('/api/v1/groups', { name: 'loopers' })).status).toBe(201);
    expect((await asAdmin.put('/api/v1/groups/loopers/members/mate')).status).toBe(200);
    const granted = await den(['env', 'grant', WS, '--group', 'loopers']);
    expect(granted.code, granted.stderr).toBe(0);

    const logViews = async () => ((await client.get(`${path}/events`)).json.events as { message: string }[])
      .filter((event) => event.message === 'Teammate mate viewed the environment: service logs.').length;
    const viewsBefore = await logViews();
    const following = den(['env', 'logs', `lead/${WS}`, 'db', '-f', '--tail', '1'], mate);
    // the CLI's stream is open once the teammate's view of the logs is recorded
    await waitFor(async () => (await logViews()) > viewsBefore, CLI_TIMEOUT_MS);
    expect((await asAdmin.delete('/api/v1/groups/loopers/members/mate')).status).toBe(204);
    const ended = await Promise.race([
      following,
      new Promise<DenResult>((_, reject) => setTimeout(() => reject(new Error('the member\'s followed log did not end after they left the group')), GRANT_CUT_TIMEOUT_MS)),
    ]);
    expect(ended.code).not.toBe(0);
    expect(ended.stdout).toMatch(/^db \| \S+ db (up|tick)$/m);
    expect(ended.stderr).toContain(`Your grant on the environment of lead/${WS} was revoked.`);

    expect((await asAdmin.put('/api/v1/groups/loopers/members/mate')).status).toBe(200);
    const fetched = await fetch(`${server.url}${path}/env/logs?follow=1&tail=0`, { headers: { authorization: `Bearer ${mate.token}`, connection: 'close' } });
    expect(fetched.status).toBe(200);
    const revoked = await den(['env', 'revoke', WS, '--group', 'loopers']);
    expect(revoked.code, revoked.stderr).toBe(0);
    const text = await Promise.race([
      fetched.text(),
      new Promise<string>((_, reject) => setTimeout(() => reject(new Error('the member\'s followed log did not end after the group\'s grant was revoked')), GRANT_CUT_TIMEOUT_MS)),
    ]);
    expect(text.trim().split('\n').at(-1)).toContain('"code":"WORKSPACE_NOT_FOUND"');
  });
});

/** Polls `check` until it holds, or fails after `timeoutMs`. */
async function waitFor(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`the condition did not hold within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
