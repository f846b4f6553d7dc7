import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AppsV1Api, CoreV1Api, NetworkingV1Api, type KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureImagesInCluster, execInPod, importImages, kubeMissingInCI, kubeSkipReason, loadKubeConfig, testImage, waitFor } from '../../../test/cluster/kube.ts';
import { createAgentDownload } from '../agent-download.ts';
import { runDriverContract } from '../driver.contract.ts';
import { basePlan, identity, recordingContext as context } from '../../../test/support/kube-plans.ts';
import type { RuntimeEvent, ServicePlan, StartContext, WorkspaceIdentity, WorkspacePlan } from '../driver.ts';
import { createKubernetesDriver, type KubernetesDriver } from './driver.ts';
import { AGENT_SECRET, HOME_CLAIM, LABEL_INSTANCE, LABEL_OWNER, LABEL_WORKSPACE, WORKSPACE_DEPLOYMENT } from './objects.ts';

const run = promisify(execFile);
/** the fake den serves this token a bundle with one byte changed */
const TAMPERED_TOKEN = 'token-tampered';
/** den's workspace image (carries the agent), and plain debootstrapped Debian (no Node, no agent, no uid 1000: gets the agent by download) */
const IMAGE = process.env.DEN_TEST_KUBE_IMAGE ?? 'den/base:bookworm';
const BARE_IMAGE = 'den/base-rootfs:bookworm';

const dockerImages = await Promise.all([IMAGE, BARE_IMAGE].map((image) => run('docker', ['image', 'inspect', image]).then(() => true, () => false)));
const skipReason = kubeSkipReason
  ?? (dockerImages.every(Boolean) ? undefined : `the images ${IMAGE} and ${BARE_IMAGE} are needed in Docker to import them into the cluster (run npm run images)`);
if (skipReason) console.warn(`[skip] Kubernetes runtime tests: ${skipReason}`);
if (kubeMissingInCI) throw new Error('CI must run the Kubernetes runtime tests: KUBECONFIG is not set (.ci/run starts the test cluster).');

/** This file's namespaces only (the instance is their prefix and label). */
const INSTANCE = `dt-${randomUUID().slice(0, 8)}`;
const dirs: string[] = [];
const drivers: KubernetesDriver[] = [];

async function makeDriver(options: { instance?: string; dataDir?: string } = {}): Promise<KubernetesDriver> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'den-kube-test-'));
  dirs.push(dataDir);
  const driver = await createKubernetesDriver({
    log: pino({ level: 'silent' }), dataDir, instance: options.instance ?? INSTANCE, downloaderImage: testImage, startTimeoutMs: 60_000, stopGraceSeconds: 2,
  });
  drivers.push(driver);
  return driver;
}

if (!skipReason) {
  beforeAll(() => ensureImagesInCluster(IMAGE, BARE_IMAGE), 600_000);
  runDriverContract('kubernetes', (config) => makeDriver({ dataDir: config.dataDir }), { image: IMAGE, readyTimeoutMs: 60_000, pidsLimit: false, concurrent: true });
} else {
  // Reported as skipped (with the reason printed above) so CI, which forbids skips, notices.
  it.skip(`RuntimeDriver contract: kubernetes (${skipReason})`);
}

afterAll(async () => {
  for (const driver of drivers) {
    for (const id of await driver.listWorkspaceIds().catch(() => [])) await driver.delete(identity('cleanup', id), context()).catch(() => undefined);
    await driver.close();
  }
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}, 300_000);

// Concurrent: each test has its own workspaces (and tokens), and waiting on the cluster is most of their time.
describe.skipIf(skipReason !== undefined)('kubernetes runtime', { timeout: 180_000, concurrent: true }, () => {
  let kc: KubeConfig;
  let core: CoreV1Api;
  let apps: AppsV1Api;
  let driver: KubernetesDriver;
  let server: Server;
  let agentUrl: string;
  /** the bundle the fake den serves, and the tokens that asked for it */
  let download: ReturnType<typeof createAgentDownload>;
  /** what the planner would name for a download delivery: the checksum of the bundle served */
  let bundleSha = '';
  const bundleTokens: string[] = [];
  const dialed: string[] = [];

  beforeAll(async () => {
    kc = loadKubeConfig();
    core = kc.makeApiClient(CoreV1Api);
    apps = kc.makeApiClient(AppsV1Api);
    driver = await makeDriver();
    const dataDir = mkdtempSync(join(tmpdir(), 'den-kube-bundle-'));
    dirs.push(dataDir);
    download = createAgentDownload(join(dataDir, 'agent-download'));
    bundleSha = (await download.archive()).sha256;
    // Stands in for the den server: serves the agent bundle (as GET /api/v1/agent/bundle does)
    // and records that an agent dialed at all.
    server = createServer((request, response) => {
      if (request.url === '/api/v1/agent/bundle') {
        bundleTokens.push(request.headers.authorization ?? '');
        void download.archive().then((archive) => {
          response.writeHead(200, { 'content-type': 'application/x-tar', 'content-length': archive.size });
          const stream = download.open(archive);
          if (request.headers.authorization !== `Bearer ${TAMPERED_TOKEN}`) return void stream.pipe(response);
          // one byte changed: the init container must refuse it
          let first = true;
          stream.on('data', (chunk: Buffer) => {
            if (first) chunk[chunk.length - 1] ^= 0xff;
            first = false;
            response.write(chunk);
          });
          stream.on('end', () => response.end());
        });
        return;
      }
      dialed.push(`${request.method} ${request.url} ${request.headers.authorization ?? ''}`);
      // no answer: the agent retries (a 401 would make it exit, and the pod crash-loop)
      request.socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    agentUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  afterAll(() => server?.close());

  it('gives each workspace its own labeled namespace with a Recreate Deployment, home PVC, token Secret, policy and quota', async () => {
    const workspace = identity('shape');
    const plan = makePlan(workspace, { services: [httpService('api')], resources: { memoryBytes: 256 * 1024 ** 2, cpu: 0.5 } });
    await driver.start(plan, context('token-shape'));
    const namespace = driver.namespaceOf(workspace.id);
    const ns = await core.readNamespace({ name: namespace });
    expect(ns.metadata?.labels).toMatchObject({ [LABEL_WORKSPACE]: workspace.id, [LABEL_INSTANCE]: INSTANCE, [LABEL_OWNER]: 'tester', 'den.dev/template': 'test-template' });

    const deployment = await apps.readNamespacedDeployment({ name: WORKSPACE_DEPLOYMENT, namespace });
    expect(deployment.spec?.strategy?.type).toBe('Recreate');
    expect(deployment.spec?.replicas).toBe(1);
    const pod = deployment.spec!.template.spec!;
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(pod.containers[0].resources?.limits).toEqual({ memory: String(256 * 1024 ** 2), cpu: '500m' });
    const env = pod.containers[0].env ?? [];
    expect(env.find((e) => e.name === 'DEN_AGENT_TOKEN')?.valueFrom?.secretKeyRef?.name).toBe(AGENT_SECRET);
    expect(env.some((e) => e.value === 'token-shape')).toBe(false); // the token is in the Secret only
    const secret = await core.readNamespacedSecret({ name: AGENT_SECRET, namespace });
    expect(Buffer.from(secret.data!['agent-token'], 'base64').toString()).toBe('token-shape');
    expect((await core.readNamespacedPersistentVolumeClaim({ name: HOME_CLAIM, namespace })).status?.phase).toBe('Bound');
    expect((await core.readNamespacedService({ name: 'api', namespace })).spec?.ports?.[0].port).toBe(8080);
    const policy = await kc.makeApiClient(NetworkingV1Api).readNamespacedNetworkPolicy({ name: 'den-isolation', namespace });
    expect(policy.spec?.ingress?.[0]._from?.[0]).toEqual({ podSelector: {} });
    const quota = await core.readNamespacedResourceQuota({ name: 'den-quota', namespace });
    expect(quota.spec?.hard).toMatchObject({ 'limits.memory': String(2 * 256 * 1024 ** 2), pods: '4' });
    // the pod runs as uid 1000 and its agent dials den (the fake server) through the node relay
    await waitFor('the agent to dial', async () => dialed.some((line) => line.includes('Bearer token-shape')), 30_000);
    await driver.delete(workspace, context());
  });

  it('changes nothing on re-apply, and a new template version changes only what differs', async () => {
    const workspace = identity('reapply');
    const plan = makePlan(workspace, { services: [httpService('api')] });
    await driver.start(plan, context('token-reapply'));
    const namespace = driver.namespaceOf(workspace.id);
    const snapshot = async () => {
      const [ws, api, pods] = await Promise.all([
        apps.readNamespacedDeployment({ name: WORKSPACE_DEPLOYMENT, namespace }),
        apps.readNamespacedDeployment({ name: 'svc-api', namespace }),
        core.listNamespacedPod({ namespace }),
      ]);
      // generation counts spec changes (status updates by controllers do not move it)
      return { ws: ws.metadata?.generation, api: api.metadata?.generation, pods: pods.items.map((p) => p.metadata?.uid).sort() };
    };
    const before = await snapshot();
    const again = context('never-asked');
    await driver.start(plan, again);
    expect(again.asked).toEqual([]);
    expect(await snapshot()).toEqual(before);

    // a new agent manifest (revision) is the workspace's alone: its services stay as they are
    const changed = { ...plan, agent: { ...plan.agent, revision: 'r2' } };
    await driver.start(changed, context('never-asked-either'));
    const after = await snapshot();
    expect(after.api).toBe(before.api); // the service was not touched
    expect(after.ws).not.toBe(before.ws);
    await driver.delete(workspace, context());
  });

  it('keeps the home PVC across stop and start, and drops the token Secret while stopped', async () => {
    const workspace = identity('stops');
    await driver.start(makePlan(workspace), context('token-stop-1'));
    const namespace = driver.namespaceOf(workspace.id);
    const claim = (await core.readNamespacedPersistentVolumeClaim({ name: HOME_CLAIM, namespace })).metadata?.uid;
    await driver.stop(workspace, context());
    expect((await driver.status(workspace)).phase).toBe('stopped');
    expect((await core.listNamespacedPod({ namespace })).items).toEqual([]);
    await expect(core.readNamespacedSecret({ name: AGENT_SECRET, namespace })).rejects.toMatchObject({ code: 404 });
    expect((await core.readNamespacedPersistentVolumeClaim({ name: HOME_CLAIM, namespace })).metadata?.uid).toBe(claim);
    const restart = context('token-stop-2');
    await driver.start(makePlan(workspace), restart);
    expect(restart.asked).toEqual(['agent-token']);
    expect((await core.readNamespacedPersistentVolumeClaim({ name: HOME_CLAIM, namespace })).metadata?.uid).toBe(claim);
    await driver.delete(workspace, context());
    await expect(core.readNamespace({ name: namespace })).rejects.toMatchObject({ code: 404 });
  });

  it('fails a start whose image cannot be pulled with a sentence and the Kubernetes event, leaving nothing running', async () => {
    const workspace = identity('no-image');
    const log = context('token-no-image');
    const failure = await driver.start(makePlan(workspace, { image: 'den.local/no-such-image:1' }), log).then(() => undefined, (error: unknown) => error as { code?: string; message: string });
    expect(failure?.code).toBe('RUNTIME_ERROR');
    expect(failure?.message).toMatch(/cannot get image den\.local\/no-such-image:1/);
    expect(log.lines.join('\n')).toMatch(/\(Kubernetes event \w+ on Pod den-workspace-/);
    expect((await driver.status(workspace)).phase).toBe('stopped');
    await driver.delete(workspace, context());
  });

  it('gets the agent into an image without it through the init container, which checks the checksum', async () => {
    const workspace = identity('download');
    await driver.start(makePlan(workspace, { image: BARE_IMAGE }), context('token-download'));
    expect(bundleTokens).toContain('Bearer token-download');
    await waitFor('the downloaded agent to dial', async () => dialed.some((line) => line.includes('Bearer token-download')), 30_000);
    // the tampered start needs nothing of the first workspace: it starts while that one's namespace goes
    const deleted = driver.delete(workspace, context());

    const tampered = identity('tampered');
    const failure = await driver.start(makePlan(tampered, { image: BARE_IMAGE }), context(TAMPERED_TOKEN)).then(() => undefined, (error: unknown) => error as { message: string; detail?: string });
    expect(failure?.message).toContain('the agent download failed');
    expect(failure?.detail).toContain('does not have the sha256 den expects');
    await Promise.all([deleted, driver.delete(tampered, context())]);
  }, 240_000);

  it('starts the agent beside a service inside its container, from the downloaded bundle, and again once it is gone', async () => {
    const workspace = identity('service-agent');
    const api: ServicePlan = {
      name: 'api', image: BARE_IMAGE, env: { ROLE: 'the api service' }, ports: [], volumes: [], dependsOn: [], command: ['sleep', '100000'],
      agent: { name: 'api', url: agentUrl, revision: 'r1', delivery: { kind: 'download', url: `${agentUrl}/api/v1/agent/bundle`, sha256: bundleSha } },
    };
    const base = makePlan(workspace, { services: [api] });
    const plan: WorkspacePlan = { ...base, secrets: [...base.secrets, { name: 'agent-token.api', env: 'DEN_AGENT_TOKEN', agent: 'api' }] };
    const tokens = (): StartContext & { lines: string[]; asked: string[] } => {
      const start = context();
      start.secret = async (name) => (start.asked.push(name), name === 'agent-token' ? 'token-sa-main' : 'token-sa-api');
      return start;
    };
    const started = 'Started the agent of service api beside it (from the downloaded bundle, mounted read-only).';
    const first = tokens();
    await driver.start(plan, first);
    expect(first.lines).toContain(started);
    expect(bundleTokens).toContain('Bearer token-sa-api');
    await waitFor('the service\'s agent to dial', async () => dialed.some((line) => line.includes('Bearer token-sa-api')), 30_000);

    // a process beside the service's own (image and command untouched), with the service's environment and its own token only
    const namespace = driver.namespaceOf(workspace.id);
    const pod = (await core.listNamespacedPod({ namespace, labelSelector: 'den.dev/service=api' })).items.find((p) => !p.metadata?.deletionTimestamp)!.metadata!.name!;
    const inService = (script: string) => execInPod(kc, namespace, pod, 'service', ['/opt/den/agent/node', '-e', script]);
    const agents = async () => JSON.parse((await inService(FIND_AGENTS)).stdout) as { pid: number; env: string[] }[];
    const [agent, ...others] = await agents();
    expect(others).toEqual([]);
    expect(agent.env).toEqual(expect.arrayContaining(['ROLE=the api service', 'DEN_AGENT_TOKEN=token-sa-api']));
    expect((await inService(`process.stdout.write(require('fs').readdirSync('/var/run/den/agent-token').filter((f) => !f.startsWith('.')).join(',') + '|' + require('fs').readFileSync('/var/run/den/agent-token/token'))`)).stdout)
      .toBe('token|token-sa-api');
    const [deployment] = (await apps.listNamespacedDeployment({ namespace, labelSelector: 'den.dev/service=api' })).items;
    expect(deployment.spec!.template.spec!.containers[0]).toMatchObject({ image: BARE_IMAGE, args: ['sleep', '100000'] });
    expect(deployment.spec!.template.spec!.containers[0].command).toBeUndefined();

    // applied again: the running agent is left alone, no token asked for
    const again = tokens();
    await driver.start(plan, again);
    expect(again.lines).toContain('The agent of service api is already running.');
    expect(again.asked).toEqual([]);
    expect((await agents()).map((a) => a.pid)).toEqual([agent.pid]);

    // gone (as when its container restarts and the reconciler sees it lost): the next start starts it again
    await inService(`process.kill(${agent.pid}, 'SIGKILL')`);
    // each look is an exec into the pod through the API server, seconds apiece on a loaded machine
    await waitFor('the agent to be gone', async () => (await agents()).length === 0, 30_000);
    const third = tokens();
    await driver.start(plan, third);
    expect(third.lines).toContain(started);
    expect(await agents()).toHaveLength(1);
    await driver.delete(workspace, context());
  }, 180_000);

  it('reports a service killed for its memory as a runtime event', async () => {
    const workspace = identity('oom');
    const events: RuntimeEvent[] = [];
    const stop = driver.observe!((event) => events.push(event));
    try {
      const hog: ServicePlan = {
        name: 'hog', image: IMAGE, env: {}, ports: [], volumes: [], dependsOn: [],
        command: ['sh', '-c', 'sleep 3; node -e "const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1))"'],
      };
      await driver.start(makePlan(workspace, { services: [hog], resources: { memoryBytes: 128 * 1024 ** 2 } }), context('token-oom'));
      const oom = await waitFor('an OOM event', async () => events.find((e) => e.workspaceId === workspace.id && e.kind === 'oom_killed'), 60_000);
      expect(oom.subject).toEqual({ type: 'service', name: 'hog' });
    } finally {
      stop();
    }
    await driver.delete(workspace, context());
  });

  it('collects the namespaces of workspaces that no longer exist, of its own instance only', async () => {
    const other = await makeDriver({ instance: `do-${randomUUID().slice(0, 8)}` });
    const kept = identity('gc-kept');
    const orphan = identity('gc-orphan');
    const foreign = identity('gc-foreign');
    await Promise.all([
      driver.start(makePlan(kept), context('t1')),
      driver.start(makePlan(orphan), context('t2')),
      other.start(makePlan(foreign), context('t3')),
    ]);
    const removed = await driver.collectGarbage(async (id) => id !== orphan.id && id !== foreign.id);
    expect(removed).toEqual([orphan.id]);
    const ids = await driver.listWorkspaceIds();
    expect(ids).toContain(kept.id);
    expect(ids).not.toContain(orphan.id);
    expect(await other.listWorkspaceIds()).toEqual([foreign.id]);
    await Promise.all([driver.delete(kept, context()), other.delete(foreign, context())]);
  }, 180_000);

  function makePlan(workspace: WorkspaceIdentity, overrides: Partial<Pick<WorkspacePlan, 'image' | 'services' | 'resources'>> = {}): WorkspacePlan {
    const image = overrides.image ?? IMAGE;
    return basePlan(workspace, {
      ...overrides, image, agentUrl,
      // as the planner chooses: den's images carry the agent, any other image downloads it
      agent: {
        name: 'main', url: agentUrl, revision: 'r1',
        delivery: image === BARE_IMAGE ? { kind: 'download', url: `${agentUrl}/api/v1/agent/bundle`, sha256: bundleSha } : { kind: 'image' },
      },
    });
  }
});

/** Prints the agents running in the container (a process whose second argument is the agent), each with its environment. */
const FIND_AGENTS = `const fs = require('fs');
const found = [];
for (const pid of fs.readdirSync('/proc').filter((p) => /^\\d+$/.test(p))) {
  try {
    if (fs.readFileSync('/proc/' + pid + '/cmdline', 'utf8').split('\\0')[1] !== '/opt/den/agent/agent.mjs') continue;
    found.push({ pid: Number(pid), env: fs.readFileSync('/proc/' + pid + '/environ', 'utf8').split('\\0') });
  } catch {}
}
process.stdout.write(JSON.stringify(found));`;

function httpService(name: string): ServicePlan {
  return {
    name, image: IMAGE, env: {}, volumes: [], dependsOn: [],
    command: ['node', '-e', `require('http').createServer((q, s) => s.end('pong from ${name}')).listen(Number(process.env.PORT))`],
    ports: [{ port: 8080, preview: false }],
    readiness: { tcp: 8080, timeoutMs: 30_000, intervalMs: 1_000 },
  };
}
