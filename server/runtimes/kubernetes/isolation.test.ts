import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import { CoreV1Api, NetworkingV1Api } from '@kubernetes/client-node';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureImagesInCluster, kubeMissingInCI, kubeSkipReason, loadKubeConfig } from '../../../test/cluster/kube.ts';
import { execInWorkspace } from '../../../test/support/exec.ts';
import { startTestServer, type TestServer } from '../../../test/support/harness.ts';
import { waitForWorkspaceReady } from '../../../test/support/templates.ts';
import { api, setupOwner, type Api, type TestUser } from '../../../test/support/users.ts';
import { createKubernetesDriver, type KubernetesDriver } from './driver.ts';
import { LABEL_SERVICE } from './objects.ts';

/**
 * NetworkPolicy enforced, end to end on the real test cluster (kube-network-policies): a den
 * server creates two workspaces from a template with a database service, through its API and
 * the real kubernetes driver. Each workspace reaches its own database (by Service name, FQDN and
 * pod IP); neither reaches the other's (same FQDN and pod IP, from the other namespace); both
 * agents dial den and run commands. The positive checks from the owner's side prove the
 * addresses the negative ones use are right, and removing one policy at the end lets the other
 * workspace in: a refusal is the policy and nothing else.
 */
const run = promisify(execFile);
const IMAGE = process.env.DEN_TEST_KUBE_IMAGE ?? 'den/base:bookworm';
const DB_PORT = 5432;
const READY_TIMEOUT_MS = 180_000;
/** Policy implementations program a new pod a moment after it is Ready (kube-proxy likewise). */
const PROGRAMMED_WITHIN_MS = 15_000;

const imageInDocker = await run('docker', ['image', 'inspect', IMAGE]).then(() => true, () => false);
const skipReason = kubeSkipReason ?? (imageInDocker ? undefined : `the image ${IMAGE} is needed in Docker to import it into the cluster (run npm run images)`);
if (skipReason) console.warn(`[skip] Kubernetes NetworkPolicy enforcement: ${skipReason}`);
if (kubeMissingInCI) throw new Error('CI must run the Kubernetes NetworkPolicy test: KUBECONFIG is not set (.ci/run starts the test cluster).');

/** a database service: a TCP server that answers each connection with its workspace's name */
const TEMPLATE = `name: isolation
workspace:
  image: ${IMAGE}
environment:
  services:
    db:
      image: ${IMAGE}
      env: { OWNER_WORKSPACE: "\${{ workspace.name }}" }
      command: [node, -e, "require('node:net').createServer((s) => { s.on('error', () => {}); s.end('db of ' + process.env.OWNER_WORKSPACE + '\\\\n'); }).listen(Number(process.env.PORT))"]
      ports: [{ port: ${DB_PORT} }]
      readiness: { tcp: ${DB_PORT}, timeout: 120s, interval: 1s }
`;

/**
 * Connects from inside a workspace to host:port and prints what happened: `reply <text>`, or
 * `blocked <why>` when no connection was made within 3 s (NetworkPolicy drops the SYN) or it
 * was refused. A name is resolved first, so a name that does not resolve says so apart.
 */
const PROBE = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
require('node:dns').lookup(host, (error, address) => {
  if (error) return console.log('unresolved ' + error.code);
  const socket = net.connect({ host: address, port: Number(port) });
  let data = '';
  socket.setTimeout(3000, () => { console.log('blocked timeout ' + address); process.exit(0); });
  socket.on('data', (d) => (data += d));
  socket.on('end', () => { console.log('reply ' + data.trim()); process.exit(0); });
  socket.on('error', (e) => { console.log('blocked ' + e.code + ' ' + address); process.exit(0); });
});`;

describe.skipIf(skipReason !== undefined)('kubernetes NetworkPolicy enforcement', { timeout: 60_000 }, () => {
  let server: TestServer;
  let driver: KubernetesDriver;
  let owner: TestUser;
  let client: Api;
  const workspaces: Record<'alpha' | 'beta', { id: string; namespace: string; dbPodIp: string }> = {} as never;

  beforeAll(async () => {
    await ensureImagesInCluster(IMAGE);
    server = await startTestServer({
      listen: true,
      driver: async (config) => (driver = await createKubernetesDriver({
        log: pino({ level: 'silent' }), dataDir: config.dataDir, instance: `np-${randomUUID().slice(0, 8)}`, startTimeoutMs: READY_TIMEOUT_MS, stopGraceSeconds: 2,
      })),
    });
    owner = await setupOwner(server.app);
    client = api(server.app, owner.token);
    const pushed = await client.post('/api/v1/templates', { files: { 'template.yaml': TEMPLATE }, activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    const core = loadKubeConfig().makeApiClient(CoreV1Api);
    await Promise.all((['alpha', 'beta'] as const).map(async (name) => {
      const created = await client.post('/api/v1/workspaces', { name, template: 'isolation' });
      expect(created.status, JSON.stringify(created.json)).toBe(202);
      const workspace = await waitForWorkspaceReady(client, owner.username, name, READY_TIMEOUT_MS);
      const namespace = driver.namespaceOf(workspace.id);
      const pods = await core.listNamespacedPod({ namespace, labelSelector: `${LABEL_SERVICE}=db` });
      const dbPodIp = pods.items.find((pod) => pod.status?.podIP && !pod.metadata?.deletionTimestamp)?.status?.podIP;
      expect(dbPodIp, `the db pod of ${name} has an IP`).toBeTruthy();
      workspaces[name] = { id: workspace.id, namespace, dbPodIp: dbPodIp! };
    }));
  }, 2 * READY_TIMEOUT_MS + 300_000);

  afterAll(async () => {
    await server?.close(); // deletes both workspaces' namespaces
  }, 300_000);

  const probe = async (from: 'alpha' | 'beta', host: string): Promise<string> => {
    const result = await execInWorkspace(server.den, workspaces[from].id, ['node', '-e', PROBE, host, String(DB_PORT)]);
    expect(result.code, result.stderr).toBe(0);
    return result.stdout.trim();
  };
  /** probes until `until` holds or PROGRAMMED_WITHIN_MS passed; the last answer */
  const probeUntil = async (from: 'alpha' | 'beta', host: string, until: (answer: string) => boolean): Promise<string> => {
    let answer = await probe(from, host);
    for (const deadline = Date.now() + PROGRAMMED_WITHIN_MS; !until(answer) && Date.now() < deadline;) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      answer = await probe(from, host);
    }
    return answer;
  };
  const fqdn = (name: 'alpha' | 'beta') => `db.${workspaces[name].namespace}.svc.cluster.local`;
  const replied = (answer: string) => answer.startsWith('reply ');
  const blocked = (answer: string) => answer.startsWith('blocked ');

  it('lets den reach both agents: each is connected and runs a command', async () => {
    for (const name of ['alpha', 'beta'] as const) {
      expect(server.den.agents.isConnected(workspaces[name].id)).toBe(true);
      expect(await execInWorkspace(server.den, workspaces[name].id, ['sh', '-c', 'printf "%s" "$DEN_WORKSPACE_NAME"'])).toMatchObject({ code: 0, stdout: name });
    }
  });

  it('lets each workspace reach its own database by Service name, FQDN and pod IP', async () => {
    const checks = (['alpha', 'beta'] as const).flatMap((name) => ['db', fqdn(name), workspaces[name].dbPodIp].map(async (host) => {
      expect(await probeUntil(name, host, replied), `${name} -> ${host}`).toBe(`reply db of ${name}`);
    }));
    await Promise.all(checks);
  });

  it('keeps each workspace out of the other\'s database, by FQDN and by pod IP', async () => {
    const checks = ([['beta', 'alpha'], ['alpha', 'beta']] as const).flatMap(([from, to]) => [fqdn(to), workspaces[to].dbPodIp].map(async (host) => {
      // the name resolves (DNS egress works): it is the connection that is refused
      const answer = await probeUntil(from, host, blocked);
      expect(answer, `${from} -> ${to}'s db at ${host}`).toMatch(/^blocked /);
      // and stays refused
      expect(await probe(from, host), `${from} -> ${to}'s db at ${host}, again`).toMatch(/^blocked /);
    }));
    await Promise.all(checks);
  });

  it('owes that to den\'s NetworkPolicy: without alpha\'s, beta reaches alpha\'s database', async () => {
    await loadKubeConfig().makeApiClient(NetworkingV1Api).deleteNamespacedNetworkPolicy({ name: 'den-isolation', namespace: workspaces.alpha.namespace });
    expect(await probeUntil('beta', workspaces.alpha.dbPodIp, replied)).toBe('reply db of alpha');
    expect(await probeUntil('beta', fqdn('alpha'), replied)).toBe('reply db of alpha');
  });
});
