/**
 * den deployed by its Helm chart into the real test cluster, end to end: the den server image
 * built from the root Dockerfile (content-cached) and imported into the cluster, `helm install`
 * into a namespace of this test, and den — a pod using its ServiceAccount (in-cluster
 * configuration, the chart's RBAC and admission policy) — creates a workspace with a
 * database-like service in the workspace's own namespace. The real `den` CLI, through a
 * port-forward to den's pod, logs in, pushes the template, creates the workspace and runs
 * `den exec` in its pod, which reaches the service by its name. Then `den delete` and
 * `helm uninstall`, after which nothing of it is left. Prints how long each part took.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CoreV1Api, KubernetesObjectApi, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { forwardPort, importImages, kubeMissingInCI, kubeSkipReason, loadKubeConfig, waitFor } from '../cluster/kube.ts';
import { runDen, type DenResult } from '../support/den-cli.ts';
import { CHART, helm, helmMissingInCI, helmSkipReason, ROOT } from './helm.ts';

const run = promisify(execFile);
const WORKSPACE_IMAGE = 'den/base:bookworm';
const dockerReady = await run('docker', ['image', 'inspect', WORKSPACE_IMAGE]).then(() => true, () => false);
const skipReason = kubeSkipReason ?? helmSkipReason ?? (dockerReady ? undefined : `Docker has no ${WORKSPACE_IMAGE} to import into the cluster (run npm run images)`);
if (skipReason) console.warn(`[skip] den installed by Helm, end to end: ${skipReason}`);
if (kubeMissingInCI || helmMissingInCI || (process.env.CI && skipReason)) {
  describe('den installed by Helm, end to end', () => {
    it('CI provides the cluster, helm and the images', () => {
      throw new Error(`CI=true but ${skipReason} .ci/run must provide them before the tests.`);
    });
  });
}

const suffix = randomBytes(3).toString('hex');
const NAMESPACE = `den-h12-e2e-${suffix}`;
/** this test's den instance: its workspace namespaces are `<instance>-<id>` */
const INSTANCE = `e2e${suffix}`;
const PASSWORD = 'in-cluster-password';
const COMMAND_TIMEOUT_MS = 240_000;

const TEMPLATE = {
  name: 'in-cluster',
  displayName: 'In-cluster check',
  description: 'A workspace with a database-like service, for the Helm chart\'s end-to-end test.',
  workspace: { image: WORKSPACE_IMAGE },
  environment: {
    services: {
      db: {
        image: WORKSPACE_IMAGE,
        // a stand-in for a database: greets each connection on the PostgreSQL port
        command: ['node', '-e', 'require("node:net").createServer((socket) => socket.end("db says hello\\n")).listen(5432)'],
        ports: [{ port: 5432, name: 'pg' }],
        readiness: { tcp: 5432, timeout: '60s', interval: '500ms' },
      },
    },
  },
};

const timings: [string, number][] = [];
async function timed<T>(what: string, work: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await work();
  } finally {
    timings.push([what, (performance.now() - started) / 1000]);
  }
}

function explain(result: DenResult): string {
  return `exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

describe.skipIf(!!skipReason)('den installed by Helm, end to end', { timeout: 900_000 }, () => {
  const kc = loadKubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const work = mkdtempSync(join(tmpdir(), 'den-helm-e2e-'));
  const cleanups: (() => Promise<unknown>)[] = [];
  let image = '';
  let installed = false;

  const den = (args: string[]) => runDen(args, { PATH: process.env.PATH ?? '', HOME: work, XDG_CONFIG_HOME: join(work, 'config') }, COMMAND_TIMEOUT_MS);

  beforeAll(async () => {
    // The den server image from the root Dockerfile (rebuilt only when its sources changed), under
    // a tag naming its image id, so the cluster gets a new one exactly when it changed.
    await timed('server image (build when changed)', () => run(process.execPath, [join(ROOT, 'workspace-images/build.ts'), '--only', 'server'], { maxBuffer: 64 * 1024 * 1024 }));
    const { stdout: id } = await run('docker', ['image', 'inspect', '--format', '{{.Id}}', 'den/server:latest']);
    image = `den.local/den-server:${id.trim().replace(/^sha256:/, '').slice(0, 16)}`;
    await run('docker', ['tag', 'den/server:latest', image]);
    await timed('images into the cluster (when missing)', async () => {
      const { stdout } = await run('bash', [join(ROOT, 'test/cluster/import-image.sh'), '--list']);
      const present = new Set(stdout.split('\n').map((line) => line.trim()));
      const missing = [image, WORKSPACE_IMAGE].filter((name) => !present.has(name) && !present.has(`docker.io/${name}`));
      if (missing.length > 0) await importImages(...missing);
    });
  }, 1_200_000);

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    if (installed) await helm(['uninstall', 'den', '--namespace', NAMESPACE, '--wait', '--timeout', '2m']).catch(() => undefined);
    await core.deleteNamespace({ name: NAMESPACE }).catch(() => undefined);
    for (const ns of (await core.listNamespace({ labelSelector: `den.dev/instance=${INSTANCE}` }).catch(() => ({ items: [] }))).items) {
      await core.deleteNamespace({ name: ns.metadata!.name! }).catch(() => undefined);
    }
    rmSync(work, { recursive: true, force: true });
    console.log(`den installed by Helm, end to end (s):\n${timings.map(([what, seconds]) => `  ${what.padEnd(44)} ${seconds.toFixed(1)}`).join('\n')}`);
  }, 300_000);

  it('installs, creates a workspace whose pod reaches its service by name, and uninstalls without a trace', async () => {
    const [repository, tag] = image.split(':');
    const install = await timed('helm install --wait (den ready)', () => helm([
      'install', 'den', CHART, '--namespace', NAMESPACE, '--create-namespace', '--wait', '--timeout', '5m',
      '--set-string', `image.repository=${repository}`, '--set-string', `image.tag=${tag}`, '--set-string', `instance=${INSTANCE}`,
      '--set', 'resources.requests.cpu=50m', '--set', 'sshPort=0',
    ], { timeoutMs: 360_000 }));
    installed = install.code === 0;
    expect(install.code, `${install.stdout}\n${install.stderr}`).toBe(0);

    const pods = await core.listNamespacedPod({ namespace: NAMESPACE, labelSelector: 'app.kubernetes.io/instance=den' });
    const pod = pods.items.find((p) => p.status?.phase === 'Running')!;
    expect(pod, 'den\'s pod runs').toBeDefined();
    // as the image's den user, with the chart's account and no kubeconfig: in-cluster configuration
    expect(pod.spec!.securityContext!.runAsUser).toBe(999);
    expect(pod.spec!.serviceAccountName).toBe('den');
    const forward = await forwardPort(kc, NAMESPACE, pod.metadata!.name!, 7080);
    cleanups.push(() => forward.close());
    const url = `http://127.0.0.1:${forward.port}`;

    // the web pages ship in the image and are served from its read-only filesystem
    const page = await fetch(`${url}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<html/i);

    const login = await den(['login', url, '--first-user-username', 'admin', '--first-user-password', PASSWORD]);
    expect(login.code, explain(login)).toBe(0);
    const templateDir = join(work, 'template');
    mkdirSync(templateDir);
    writeFileSync(join(templateDir, 'template.yaml'), stringify(TEMPLATE));
    const push = await den(['templates', 'push', templateDir, '--activate']);
    expect(push.code, explain(push)).toBe(0);

    const created = await timed('den create --wait (workspace + service up)', () => den(['create', 'demo', '--template', 'in-cluster', '--wait']));
    expect(created.code, explain(created)).toBe(0);
    expect(created.stdout).toMatch(/admin\/demo is running\./);
    const namespaces = await core.listNamespace({ labelSelector: `den.dev/instance=${INSTANCE}` });
    expect(namespaces.items.map((ns) => ns.metadata!.labels!['den.dev/workspace-name'])).toEqual(['demo']);
    const workspaceNs = namespaces.items[0].metadata!.name!;
    expect(workspaceNs.startsWith(`${INSTANCE}-`)).toBe(true);

    // den exec runs in the workspace pod (its hostname), which reaches db by name. Kubernetes
    // programs Service proxying and NetworkPolicy a moment after a pod is Ready, so the
    // connection is retried for up to 20 s while it is refused.
    const exec = await timed('den exec (reach db by name)', () => den(['exec', 'demo', '--', 'node', '-e', [
      'console.log("host", require("node:os").hostname());',
      'const deadline = Date.now() + 20000;',
      'const attempt = () => { const socket = require("node:net").connect(5432, "db");',
      '  socket.on("data", (d) => process.stdout.write(d));',
      '  socket.on("error", (e) => { if (Date.now() > deadline) { console.error(e.message); process.exit(2); } setTimeout(attempt, 250); }); };',
      'attempt();',
    ].join(' ')]));
    expect(exec.code, explain(exec)).toBe(0);
    expect(exec.stdout).toContain('db says hello');
    const [workspacePod] = (await core.listNamespacedPod({ namespace: workspaceNs, labelSelector: 'den.dev/kind=workspace' })).items;
    expect(exec.stdout).toContain(`host ${workspacePod.spec!.hostname ?? workspacePod.metadata!.name}`);
    // the workspace pod has no API token (den's account stays den's)
    const token = await den(['exec', 'demo', '--', 'sh', '-c', 'test -e /var/run/secrets/kubernetes.io/serviceaccount/token && echo has-token || echo no-token']);
    expect(token.stdout.trim()).toBe('no-token');

    const deleted = await timed('den delete --wait (namespace gone)', () => den(['delete', 'demo', '--wait']));
    expect(deleted.code, explain(deleted)).toBe(0);
    expect((await core.listNamespace({ labelSelector: `den.dev/instance=${INSTANCE}` })).items).toEqual([]);

    await forward.close();
    const uninstall = await timed('helm uninstall --wait', () => helm(['uninstall', 'den', '--namespace', NAMESPACE, '--wait', '--timeout', '2m']));
    expect(uninstall.code, `${uninstall.stdout}\n${uninstall.stderr}`).toBe(0);
    installed = false;
    // nothing of the release is left: no pod, claim, Service, account, and none of its cluster-wide objects
    await waitFor('den\'s pods to be gone', async () => (await core.listNamespacedPod({ namespace: NAMESPACE })).items.length === 0, 120_000, 500);
    expect((await core.listNamespacedPersistentVolumeClaim({ namespace: NAMESPACE })).items).toEqual([]);
    expect((await core.listNamespacedService({ namespace: NAMESPACE })).items).toEqual([]);
    expect((await core.listNamespacedServiceAccount({ namespace: NAMESPACE })).items.map((account) => account.metadata!.name)).toEqual(['default']);
    const clusterName = `${NAMESPACE}-den`;
    expect((await rbac.listClusterRole()).items.map((role) => role.metadata!.name)).not.toContain(clusterName);
    expect((await rbac.listClusterRoleBinding()).items.map((binding) => binding.metadata!.name)).not.toContain(clusterName);
    const policy = await objects.read({ apiVersion: 'admissionregistration.k8s.io/v1', kind: 'ValidatingAdmissionPolicy', metadata: { name: clusterName } }).then(() => true, () => false);
    expect(policy).toBe(false);
  });
});
