import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TemplateInput } from '../protocol/template.ts';
import type { Config } from '../server/config.ts';
import type { RuntimeDriver } from '../server/runtimes/driver.ts';
import { ensureImagesInCluster, kubeMissingInCI, kubeSkipReason, loadKubeConfig, waitFor } from './cluster/kube.ts';
import { runDen, type DenResult } from './support/den-cli.ts';
import { dockerSkipReason } from './support/docker.ts';
import { execInWorkspace } from './support/exec.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { waitForWorkspaceReady } from './support/templates.ts';
import { api, setupOwner, type Api, type TestUser } from './support/users.ts';

/**
 * Tasks and tests in one-off containers (docker) and pods (kubernetes) from a service's image
 * (`oneOff: true`), through the whole server and the real `den` CLI, on the real engine and the
 * test cluster, one workspace per runtime. The api service has no agent: every command below
 * runs in a container of its own, made from api's image with api's environment, on the
 * workspace's network, with the workspace's home read-only. Shown: the start build's task
 * reaches the db service by name; `den env run` streams the task's output and exits with its
 * status 3; a passing test is cached by version; a hung one ends at its time limit with a
 * sentence; Ctrl-C of `den test` removes the container and records the run as cancelled; the
 * garbage collector removes a one-off left past its deadline; none is left afterwards.
 */
const READY_TIMEOUT_MS = 150_000;
const CLI_TIMEOUT_MS = 90_000;
const GONE_TIMEOUT_MS = 20_000;
const ROOT = resolve(import.meta.dirname, '..');

const docker = new Dockerode();
/** den's base image: it has Node (db's listener and the task's client are Node one-liners) */
const IMAGE = 'den/base:bookworm';
const dockerSkip = await dockerSkipReason(docker, [IMAGE]);
if (dockerSkip) console.warn(`[skip] one-off runs on docker: ${dockerSkip}.`);
if (kubeMissingInCI) throw new Error('CI must run the one-off runs on kubernetes: KUBECONFIG is not set (.ci/run starts the test cluster).');
const kubeSkip = kubeSkipReason ?? dockerSkip;
if (kubeSkipReason) console.warn(`[skip] one-off runs on kubernetes: ${kubeSkipReason}`);

// a readiness probe that connects and resets must not end the service: its socket errors are ignored
const DB_SERVER = "require('net').createServer((s) => { s.on('error', () => {}); s.end('pong from db\\n'); }).listen(7000, () => console.log('db listening'))";
const DB_CLIENT = "const s = require('net').connect(7000, 'db'); s.setEncoding('utf8'); s.on('data', (d) => process.stdout.write(d)); s.on('error', (e) => { console.error('db unreachable: ' + e.message); process.exit(1); })";

function template(name: string): TemplateInput {
  return {
    name,
    // a memory limit: on kubernetes a ResourceQuota caps the namespace, which must leave room for the one-off pod
    workspace: { image: IMAGE, resources: { memory: '512Mi' } },
    environment: {
      services: {
        db: { image: IMAGE, command: ['node', '-e', DB_SERVER], ports: [{ port: 7000 }], readiness: { tcp: 7000 } },
        // no agent: tasks and tests reach it only as one-off containers from its image
        api: { image: IMAGE, command: ['sleep', 'infinity'], env: { GREETING: 'hello from the api image' } },
      },
      tasks: {
        // passes in the start build; exits 3 once the workspace has ~/fail-reach (its home is mounted read-only)
        reach: {
          service: 'api', oneOff: true, timeout: '60s',
          run: `echo "greeting: $GREETING"; node -e "${DB_CLIENT.replace(/"/g, '\\"')}" || exit 1; if touch /home/den/probe 2>/dev/null; then echo "home writable"; else echo "home read-only"; fi; if [ -e /home/den/fail-reach ]; then echo "failing as asked" >&2; exit 3; fi`,
        },
      },
      tests: {
        ok: { service: 'api', oneOff: true, run: 'echo "test ran in a one-off from the api image: $GREETING"', timeout: '60s' },
        hang: { service: 'api', oneOff: true, run: 'echo "hanging"; sleep 600', timeout: '4s' },
        wait: { service: 'api', oneOff: true, run: 'echo "waiting"; sleep 600', timeout: '5m' },
      },
    },
  };
}

interface Runtime {
  name: 'docker' | 'kubernetes';
  skip?: string;
  instance: string;
  driver(config: Config): Promise<RuntimeDriver>;
  /** the one-off containers (pods) of a workspace that exist now */
  oneOffs(server: TestServer, workspaceId: string): Promise<number>;
  /** the garbage collector's sweep of one-offs, as if it ran at `now` */
  collectExpired(now: number): Promise<number>;
}

const dockerInstance = `den-test-${randomUUID().slice(0, 8)}`;
const kubeInstance = `oo-${randomUUID().slice(0, 8)}`;

const runtimes: Runtime[] = [
  {
    name: 'docker',
    skip: dockerSkip,
    instance: dockerInstance,
    async driver() {
      const { createDockerDriver } = await import('../server/runtimes/docker/driver.ts');
      return createDockerDriver({
        log: pino({ level: 'silent' }), docker: docker as never, agentBundleDir: join(mkdtempSync(join(tmpdir(), 'den-one-off-')), 'agent'),
        stopGraceSeconds: 1, instance: dockerInstance,
      });
    },
    async oneOffs(_server, workspaceId) {
      const found = await docker.listContainers({ all: true, filters: JSON.stringify({ label: [`den.workspace.id=${workspaceId}`, 'den.kind=one-off'] }) });
      return found.length;
    },
    async collectExpired(now) {
      const { removeExpiredOneOffs } = await import('../server/runtimes/docker/one-off.ts');
      return removeExpiredOneOffs(docker as never, dockerInstance, now);
    },
  },
  {
    name: 'kubernetes',
    skip: kubeSkip,
    instance: kubeInstance,
    async driver(config) {
      await ensureImagesInCluster(IMAGE);
      const { createKubernetesDriver } = await import('../server/runtimes/kubernetes/driver.ts');
      return createKubernetesDriver({ log: pino({ level: 'silent' }), dataDir: config.dataDir, instance: kubeInstance, stopGraceSeconds: 1, startTimeoutMs: 120_000 });
    },
    async oneOffs(server, workspaceId) {
      const namespace = (server.den.driver as unknown as { namespaceOf(id: string): string }).namespaceOf(workspaceId);
      const pods = await loadKubeConfig().makeApiClient(CoreV1Api).listNamespacedPod({ namespace, labelSelector: 'den.dev/kind=one-off' });
      return pods.items.length;
    },
    async collectExpired(now) {
      const { deleteExpiredOneOffs } = await import('../server/runtimes/kubernetes/one-off.ts');
      return deleteExpiredOneOffs(loadKubeConfig().makeApiClient(CoreV1Api), kubeInstance, now);
    },
  },
];

// The runtimes side by side (each its own den, instance and workspace); within one runtime the
// tests run in order, on the one workspace whose one-offs and runs they count.
describe.each(runtimes)('tasks and tests in one-off containers on the $name runtime', { timeout: 300_000, concurrent: true }, (runtime) => {
  if (runtime.skip) {
    // reported as skipped with the reason printed above, so CI (which forbids skips) notices
    it.skip(`needs ${runtime.name === 'kubernetes' ? 'the test cluster and Docker' : 'Docker'}: ${runtime.skip}`);
    return;
  }
  let server: TestServer;
  let owner: TestUser;
  let client: Api;
  let workspaceId: string;
  const homes: string[] = [];
  const WS = 'oneoff';
  /** each test counts the one-offs and runs of the one workspace: one after the other */
  const IN_ORDER = { concurrent: false };

  beforeAll(async () => {
    server = await startTestServer({ listen: true, driver: runtime.driver });
    owner = await setupOwner(server.app, 'lead');
    client = api(server.app, owner.token);
    const pushed = await client.post('/api/v1/templates', { files: { 'template.yaml': JSON.stringify(template('one-off')) }, activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    const created = await client.post('/api/v1/workspaces', { name: WS, template: 'one-off' });
    expect(created.status, JSON.stringify(created.json)).toBe(202);
    workspaceId = created.json.workspace.id;
    await waitForWorkspaceReady(client, owner.username, WS, READY_TIMEOUT_MS);
  }, READY_TIMEOUT_MS + 60_000); // the cluster's image import and a first start on a loaded machine outlast the default hook timeout
  afterAll(async () => {
    if (server && workspaceId) {
      await server.den.driver.delete({ id: workspaceId, name: WS, ownerId: owner.userId, ownerName: owner.username }, { signal: new AbortController().signal, log: () => {} })
        .catch(() => undefined);
    }
    await server?.close();
    for (const home of homes) rmSync(home, { recursive: true, force: true });
  });

  const path = `/api/v1/workspaces/lead/${WS}`;
  const cliEnv = () => {
    const home = mkdtempSync(join(tmpdir(), 'den-one-off-cli-'));
    homes.push(home);
    return { PATH: process.env.PATH!, HOME: home, XDG_CONFIG_HOME: home, DEN_URL: server.url!, DEN_TOKEN: owner.token };
  };
  const den = (args: string[]): Promise<DenResult> => runDen(args, cliEnv(), CLI_TIMEOUT_MS);
  const runsOf = async (kind: string, name: string) =>
    (await client.get(`${path}/env/runs?kind=${kind}&name=${name}`)).json.runs as { id: string; trigger: string; state: string; exitCode: number | null; version: string }[];
  const noneLeft = () => waitFor('no one-off container left', async () => (await runtime.oneOffs(server, workspaceId)) === 0, GONE_TIMEOUT_MS, 250);

  it('ran the task in the start build in a one-off from the api image: api\'s environment, db reached by name, the home read-only', IN_ORDER, async () => {
    const [run] = await runsOf('task', 'reach');
    expect(run).toMatchObject({ trigger: 'build', state: 'passed', exitCode: 0 });
    const detail = (await client.get(`${path}/env/runs/${run.id}`)).json;
    expect(detail.log).toContain('greeting: hello from the api image');
    expect(detail.log).toContain('pong from db');
    expect(detail.log).toContain('home read-only');
    const view = (await client.get(`${path}/env`)).json;
    expect(view.tasks).toMatchObject([{ name: 'reach', service: 'api', oneOff: true }]);
    await noneLeft();
  });

  it('`den env run` streams the task\'s lines and exits with its status 3; the run keeps the status', IN_ORDER, async () => {
    // the workspace writes a file in its home; the one-off sees it there, read-only
    expect((await execInWorkspace(server.den, workspaceId, ['sh', '-c', 'touch ~/fail-reach'])).code).toBe(0);
    const result = await den(['env', 'run', WS, 'reach']);
    expect(result.code, result.stderr).toBe(3);
    expect(result.stdout).toContain('greeting: hello from the api image');
    expect(result.stdout).toContain('pong from db');
    // docker keeps the two streams apart; a pod's log is one stream (Kubernetes does not tell them apart)
    expect(runtime.name === 'docker' ? result.stderr : result.stdout).toContain('failing as asked');
    expect(result.stderr).toMatch(/Task reach: failed \(exit status 3\)/);
    const [latest] = await runsOf('task', 'reach');
    expect(latest).toMatchObject({ trigger: 'user', state: 'failed', exitCode: 3 });
    expect(await execInWorkspace(server.den, workspaceId, ['sh', '-c', 'rm ~/fail-reach'])).toMatchObject({ code: 0 });
    await noneLeft();
  });

  it('caches a passing one-off test by version, and `--force` runs it again', IN_ORDER, async () => {
    const first = await den(['test', WS, 'ok']);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain('test ran in a one-off from the api image: hello from the api image');
    const second = await den(['test', WS, 'ok']);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).toContain('cached: this version passed before');
    expect(second.stdout).not.toContain('test ran in a one-off');
    expect(await runsOf('test', 'ok')).toHaveLength(1);
    const forced = await den(['test', WS, 'ok', '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout).toContain('test ran in a one-off');
    const runs = await runsOf('test', 'ok');
    expect(runs).toHaveLength(2);
    expect(runs[0].version).toBe(runs[1].version);
    await noneLeft();
  });

  it('ends a hung one-off at its time limit with a sentence, and removes it', IN_ORDER, async () => {
    const result = await den(['test', WS, 'hang']);
    expect(result.code).toBe(1);
    expect(result.stdout).toContain('hanging');
    expect(result.stderr).toContain('den ended the test after its timeout of 4s and removed its one-off container.');
    const [run] = await runsOf('test', 'hang');
    expect(run).toMatchObject({ state: 'failed', exitCode: null });
    await noneLeft();
  });

  it('Ctrl-C of `den test` removes the one-off and records the run as cancelled', IN_ORDER, async () => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'den.js'), 'test', WS, 'wait'], { cwd: ROOT, env: cliEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    const exited = new Promise<number | null>((done) => child.on('close', (code) => done(code)));
    await waitFor('the test\'s first line', async () => stdout.includes('waiting'), CLI_TIMEOUT_MS, 100);
    expect(await runtime.oneOffs(server, workspaceId)).toBe(1);
    child.kill('SIGINT');
    expect(await exited).not.toBe(0);
    await waitFor('the run recorded as cancelled', async () => (await runsOf('test', 'wait'))[0]?.state === 'cancelled', GONE_TIMEOUT_MS, 250);
    await noneLeft();
  });

  it('the garbage collector removes a one-off left past its deadline (a den that stopped mid-run), and none before', IN_ORDER, async () => {
    const running = den(['test', WS, 'wait']);
    await waitFor('the one-off running', async () => (await runtime.oneOffs(server, workspaceId)) === 1, CLI_TIMEOUT_MS, 250);
    // within its deadline (5 minutes): kept
    expect(await runtime.collectExpired(Date.now())).toBe(0);
    expect(await runtime.oneOffs(server, workspaceId)).toBe(1);
    // as the collector would see it once the deadline and the grace have passed
    expect(await runtime.collectExpired(Date.now() + 7 * 60_000)).toBe(1);
    const result = await running;
    expect(result.code).not.toBe(0);
    const [run] = await runsOf('test', 'wait');
    expect(run.state).toBe('failed');
    await noneLeft();
  });
});
