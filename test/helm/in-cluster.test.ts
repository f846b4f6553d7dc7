/**
 * den deployed by its Helm chart into the real test cluster, end to end: the den server image
 * built from the root Dockerfile (content-cached) and imported into the cluster, `helm install`
 * into a namespace of this test, and den — a pod using its ServiceAccount (in-cluster
 * configuration, the chart's RBAC and admission policy) — creates a workspace with a
 * database-like service in the workspace's own namespace. The real `den` CLI, through a
 * port-forward to den's pod, logs in, pushes the template, creates the workspace and runs
 * `den exec` in its pod, which reaches the service by its name. Then `den delete` and
 * `helm uninstall`, after which nothing of it is left. Then the two-replica switch: two dens on a
 * PostgreSQL in the cluster, the CLI logged in to each through its own port-forward, `den exec`
 * through both (the agent's one link is to one of them: the other relays, ADR 0015, at the pod
 * IP the chart gives it). The image import is shared. Prints how long each part took.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AppsV1Api, CoreV1Api, KubernetesObjectApi, RbacAuthorizationV1Api, type V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { forwardPort, importImages, kubeMissingInCI, kubeSkipReason, loadKubeConfig, waitFor } from '../cluster/kube.ts';
import { runDen, type DenResult } from '../support/den-cli.ts';
import { CHART, helm, helmMissingInCI, helmSkipReason, ROOT } from './helm.ts';

const run = promisify(execFile);
const WORKSPACE_IMAGE = 'den/base:bookworm';
/** the database of the two-replica install (workspace-images/postgres, built by npm run images) */
const POSTGRES_IMAGE = 'den/postgres:15';
const dockerReady = await Promise.all([WORKSPACE_IMAGE, POSTGRES_IMAGE].map((name) => run('docker', ['image', 'inspect', name]).then(() => true, () => false)));
const skipReason = kubeSkipReason ?? helmSkipReason ?? (dockerReady.every(Boolean) ? undefined : `Docker lacks ${WORKSPACE_IMAGE} or ${POSTGRES_IMAGE} to import into the cluster (run npm run images)`);
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
/** the two-replica install's namespace and instance */
const HA_NAMESPACE = `den-h12-ha-${suffix}`;
const HA_INSTANCE = `ha${suffix}`;
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
        // a reset by a client (a readiness probe, den's wait for the service) must not end it
        command: ['node', '-e', 'require("node:net").createServer((socket) => { socket.on("error", () => {}); socket.end("db says hello\\n"); }).listen(5432)'],
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

// The two cases side by side: each has its own namespace, instance, den and CLI configuration,
// and most of each is waiting for helm, pods and the workspace.
describe.skipIf(!!skipReason)('den installed by Helm, end to end', { timeout: 900_000, concurrent: true }, () => {
  const kc = loadKubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const work = mkdtempSync(join(tmpdir(), 'den-helm-e2e-'));
  const cleanups: (() => Promise<unknown>)[] = [];
  let image = '';
  /** namespaces with a release still installed */
  const installed = new Set<string>();

  const den = (args: string[], config = 'config') => runDen(args, { PATH: process.env.PATH ?? '', HOME: work, XDG_CONFIG_HOME: join(work, config) }, COMMAND_TIMEOUT_MS);

  /** `helm install` of the chart with this test's image, waited for until den is ready. */
  function install(namespace: string, instance: string, set: string[] = []) {
    const [repository, tag] = image.split(':');
    return helm([
      'install', 'den', CHART, '--namespace', namespace, '--create-namespace', '--wait', '--timeout', '5m',
      '--set-string', `image.repository=${repository}`, '--set-string', `image.tag=${tag}`, '--set-string', `instance=${instance}`,
      '--set', 'resources.requests.cpu=50m', '--set', 'sshPort=0', ...set,
    ], { timeoutMs: 360_000 });
  }

  /** den's running pods in a namespace, each port-forwarded: their URLs on 127.0.0.1 */
  async function forwardToDen(namespace: string): Promise<{ pod: V1Pod; url: string; close(): Promise<void> }[]> {
    const pods = (await core.listNamespacedPod({ namespace, labelSelector: 'app.kubernetes.io/instance=den' })).items
      .filter((pod) => pod.status?.phase === 'Running' && !pod.metadata?.deletionTimestamp);
    return Promise.all(pods.map(async (pod) => {
      const forward = await forwardPort(kc, namespace, pod.metadata!.name!, 7080);
      cleanups.push(() => forward.close());
      return { pod, url: `http://127.0.0.1:${forward.port}`, close: () => forward.close() };
    }));
  }

  async function pushTemplate(config = 'config'): Promise<void> {
    const templateDir = join(work, `template-${config}`);
    rmSync(templateDir, { recursive: true, force: true });
    mkdirSync(templateDir);
    writeFileSync(join(templateDir, 'template.yaml'), stringify(TEMPLATE));
    const push = await den(['templates', 'push', templateDir, '--activate'], config);
    expect(push.code, explain(push)).toBe(0);
  }

  /** `den exec` in workspace demo: prints the pod's hostname and what db says on its port, retried for 20 s while refused. */
  const reachDb = (config = 'config') => den(['exec', 'demo', '--', 'node', '-e', [
    'console.log("host", require("node:os").hostname());',
    'const deadline = Date.now() + 20000;',
    'const attempt = () => { const socket = require("node:net").connect(5432, "db");',
    '  socket.on("data", (d) => process.stdout.write(d));',
    '  socket.on("error", (e) => { if (Date.now() > deadline) { console.error(e.message); process.exit(2); } setTimeout(attempt, 250); }); };',
    'attempt();',
  ].join(' ')], config);

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
      const missing = [image, WORKSPACE_IMAGE, POSTGRES_IMAGE].filter((name) => !present.has(name) && !present.has(`docker.io/${name}`));
      if (missing.length > 0) await importImages(...missing);
    });
  }, 1_200_000);

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    for (const namespace of installed) await helm(['uninstall', 'den', '--namespace', namespace, '--wait', '--timeout', '2m']).catch(() => undefined);
    for (const [namespace, instance] of [[NAMESPACE, INSTANCE], [HA_NAMESPACE, HA_INSTANCE]]) {
      await core.deleteNamespace({ name: namespace }).catch(() => undefined);
      for (const ns of (await core.listNamespace({ labelSelector: `den.dev/instance=${instance}` }).catch(() => ({ items: [] }))).items) {
        await core.deleteNamespace({ name: ns.metadata!.name! }).catch(() => undefined);
      }
    }
    rmSync(work, { recursive: true, force: true });
    console.log(`den installed by Helm, end to end (s):\n${timings.map(([what, seconds]) => `  ${what.padEnd(44)} ${seconds.toFixed(1)}`).join('\n')}`);
  }, 300_000);

  it('installs, creates a workspace whose pod reaches its service by name, and uninstalls without a trace', async () => {
    const installing = await timed('helm install --wait (den ready)', () => install(NAMESPACE, INSTANCE));
    expect(installing.code, `${installing.stdout}\n${installing.stderr}`).toBe(0);
    installed.add(NAMESPACE);

    const [forward] = await forwardToDen(NAMESPACE);
    const { pod, url } = forward;
    // as the image's den user, with the chart's account and no kubeconfig: in-cluster configuration
    expect(pod.spec!.securityContext!.runAsUser).toBe(999);
    expect(pod.spec!.serviceAccountName).toBe('den');

    // the web pages ship in the image and are served from its read-only filesystem
    const page = await fetch(`${url}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toMatch(/<html/i);

    const login = await den(['login', url, '--first-user-username', 'admin', '--first-user-password', PASSWORD]);
    expect(login.code, explain(login)).toBe(0);
    await pushTemplate();

    const created = await timed('den create --wait (workspace + service up)', () => den(['create', 'demo', '--template', 'in-cluster', '--wait']));
    expect(created.code, explain(created)).toBe(0);
    expect(created.stdout).toMatch(/admin\/demo is running\./);
    const namespaces = await core.listNamespace({ labelSelector: `den.dev/instance=${INSTANCE}` });
    expect(namespaces.items.map((ns) => ns.metadata!.labels!['den.dev/workspace-name'])).toEqual(['demo']);
    const workspaceNs = namespaces.items[0].metadata!.name!;
    expect(workspaceNs.startsWith(`${INSTANCE}-`)).toBe(true);

    // den exec runs in the workspace pod (its hostname), which reaches db by name. Kubernetes
    // programs Service proxying and NetworkPolicy a moment after a pod is Ready, so the
    // connection is retried while it is refused.
    const exec = await timed('den exec (reach db by name)', () => reachDb());
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
    installed.delete(NAMESPACE);
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
  it('runs two replicas on PostgreSQL: a user on either replica reaches the workspace, wherever its agent is connected', async () => {
    const apps = kc.makeApiClient(AppsV1Api);
    await core.createNamespace({ body: { metadata: { name: HA_NAMESPACE } } });
    // PostgreSQL beside den (in a real cluster: a managed or operator-run database)
    const labels = { app: 'postgres' };
    await apps.createNamespacedDeployment({
      namespace: HA_NAMESPACE,
      body: {
        metadata: { name: 'postgres' },
        spec: {
          selector: { matchLabels: labels },
          template: {
            metadata: { labels },
            spec: {
              containers: [{
                name: 'postgres', image: POSTGRES_IMAGE, imagePullPolicy: 'IfNotPresent',
                env: [{ name: 'POSTGRES_PASSWORD', value: 'den-password' }, { name: 'POSTGRES_DB', value: 'den' }],
                ports: [{ containerPort: 5432 }],
                readinessProbe: { exec: { command: ['pg_isready', '-h', '127.0.0.1', '-U', 'postgres'] }, periodSeconds: 1 },
              }],
            },
          },
        },
      },
    });
    await core.createNamespacedService({ namespace: HA_NAMESPACE, body: { metadata: { name: 'postgres' }, spec: { selector: labels, ports: [{ port: 5432 }] } } });
    await timed('two replicas: PostgreSQL ready', () => waitFor('PostgreSQL to be ready', async () => {
      const deployment = await apps.readNamespacedDeployment({ name: 'postgres', namespace: HA_NAMESPACE });
      return (deployment.status?.readyReplicas ?? 0) >= 1;
    }, 180_000, 500));

    const installing = await timed('two replicas: helm install --wait', () => install(HA_NAMESPACE, HA_INSTANCE, [
      '--set', 'replicas=2', '--set-string', 'storage.database=postgres',
      '--set-string', `storage.postgres.url=postgres://postgres:den-password@postgres.${HA_NAMESPACE}.svc:5432/den`,
    ]));
    expect(installing.code, `${installing.stdout}\n${installing.stderr}`).toBe(0);
    installed.add(HA_NAMESPACE);
    const replicas = await forwardToDen(HA_NAMESPACE);
    expect(replicas).toHaveLength(2);
    // each replica announces its own pod IP as its relay URL
    for (const { pod } of replicas) expect(pod.status!.podIP).toMatch(/^\d+\.\d+\.\d+\.\d+$/);

    const [a, b] = replicas;
    const loginA = await den(['login', a.url, '--first-user-username', 'admin', '--first-user-password', PASSWORD], 'config-a');
    expect(loginA.code, explain(loginA)).toBe(0);
    const loginB = await den(['login', b.url, '--username', 'admin', '--password', PASSWORD], 'config-b');
    expect(loginB.code, explain(loginB)).toBe(0);
    await pushTemplate('config-a');
    const created = await timed('two replicas: den create --wait', () => den(['create', 'demo', '--template', 'in-cluster', '--wait'], 'config-a'));
    expect(created.code, explain(created)).toBe(0);

    // The agent holds one link, to one replica (the Service chose it); exec through the other one
    // goes through that replica's relay at its pod IP.
    for (const config of ['config-a', 'config-b']) {
      const exec = await timed(`two replicas: den exec through ${config.slice(-1).toUpperCase()}`, () => reachDb(config));
      expect(exec.code, `${config}: ${explain(exec)}`).toBe(0);
      expect(exec.stdout).toContain('db says hello');
    }

    const deleted = await den(['delete', 'demo', '--wait'], 'config-b');
    expect(deleted.code, explain(deleted)).toBe(0);
    expect((await core.listNamespace({ labelSelector: `den.dev/instance=${HA_INSTANCE}` })).items).toEqual([]);
    for (const replica of replicas) await replica.close();
    const uninstall = await helm(['uninstall', 'den', '--namespace', HA_NAMESPACE, '--wait', '--timeout', '2m']);
    expect(uninstall.code, `${uninstall.stdout}\n${uninstall.stderr}`).toBe(0);
    installed.delete(HA_NAMESPACE);
    // the Secret with the database URL went with the release
    expect((await core.listNamespacedSecret({ namespace: HA_NAMESPACE })).items.map((secret) => secret.metadata!.name)).not.toContain('den-database');
  });
});
