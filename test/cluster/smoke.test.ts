/**
 * Smoke test of the real test Kubernetes (test/cluster/up.sh) through @kubernetes/client-node:
 * a namespace, a Deployment running a command in a locally built image, a Service reached by
 * DNS name from another pod, a PVC written and read back (across a pod restart), exec into the
 * pod and port-forward to it through the API server, a NetworkPolicy enforced (kube-network-policies).
 * Removes its namespace at the end.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { AppsV1Api, CoreV1Api, NetworkingV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { execInPod, forwardPort, kubeMissingInCI, kubeSkipReason, loadKubeConfig, testImage, waitFor } from './kube.ts';

if (kubeSkipReason) console.warn(`[skip] Kubernetes smoke test: ${kubeSkipReason}`);

if (kubeMissingInCI) {
  describe('Kubernetes smoke test', () => {
    test('CI provides a test cluster (KUBECONFIG)', () => {
      throw new Error(`CI=true but ${kubeSkipReason} .ci/run must start the cluster before the tests.`);
    });
  });
}

const ns = `den-smoke-${randomBytes(3).toString('hex')}`;
const app = 'echo';
const page = `hello from ${ns}`;

function ready(pod: V1Pod): boolean {
  return !pod.metadata?.deletionTimestamp && !!pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
}

/**
 * GET / over a raw socket through the forwarded port. Resolves once the whole response (per
 * Content-Length) has arrived: client-node's PortForward does not end the local socket when
 * the pod closes its side, so waiting for 'end' would hang.
 */
function httpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const s = net.connect(port, '127.0.0.1', () => s.write('GET / HTTP/1.0\r\nHost: x\r\n\r\n'));
    const done = () => {
      s.destroy();
      resolve(buf.toString());
    };
    s.setTimeout(10_000, () => s.destroy(new Error(`port-forward: no complete answer in 10 s (got ${JSON.stringify(buf.toString())})`)));
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const head = buf.indexOf('\r\n\r\n');
      const len = /content-length:\s*(\d+)/i.exec(buf.subarray(0, Math.max(head, 0)).toString());
      if (head >= 0 && len && buf.length >= head + 4 + Number(len[1])) done();
    });
    s.on('end', done);
    s.on('error', reject);
  });
}

describe.skipIf(!!kubeSkipReason)('Kubernetes smoke test', () => {
  let kc: KubeConfig;
  let core: CoreV1Api;
  let apps: AppsV1Api;
  let net: NetworkingV1Api;
  let podName = '';

  /** Runs a one-shot busybox pod; resolves with its final phase and logs. */
  async function runPod(name: string, labels: Record<string, string>, script: string): Promise<{ phase: string; logs: string }> {
    await core.createNamespacedPod({
      namespace: ns,
      body: {
        metadata: { name, labels },
        spec: {
          restartPolicy: 'Never',
          terminationGracePeriodSeconds: 0,
          containers: [{ name: 'main', image: testImage, imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', script] }],
        },
      },
    });
    const phase = await waitFor(
      `pod ${name} to finish`,
      async () => {
        const p = await core.readNamespacedPod({ name, namespace: ns });
        return p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed' ? p.status.phase : undefined;
      },
      90_000,
    );
    return { phase, logs: await core.readNamespacedPodLog({ name, namespace: ns }) };
  }

  const runningPod = () =>
    waitFor(
      `a ready pod of deployment ${app}`,
      async () => (await core.listNamespacedPod({ namespace: ns, labelSelector: `app=${app}` })).items.find(ready),
      90_000,
    );

  beforeAll(async () => {
    kc = loadKubeConfig();
    core = kc.makeApiClient(CoreV1Api);
    apps = kc.makeApiClient(AppsV1Api);
    net = kc.makeApiClient(NetworkingV1Api);
    await core.createNamespace({ body: { metadata: { name: ns, labels: { 'den.dev/test': 'smoke' } } } });
    // pods are refused until the controller-manager has created the namespace's default ServiceAccount
    await waitFor('the default ServiceAccount', () => core.readNamespacedServiceAccount({ name: 'default', namespace: ns }), 30_000);
  });

  afterAll(async () => {
    if (!core) return;
    await core.deleteNamespace({ name: ns }).catch(() => undefined);
    // wait until it is gone (PVC teardown included) so runs leave nothing behind
    await waitFor(
      `namespace ${ns} to be deleted`,
      async () => {
        try {
          await core.readNamespace({ name: ns });
          return false;
        } catch {
          return true;
        }
      },
      90_000,
      500,
    );
  }, 120_000);

  test('a Deployment runs a command in a locally built image, with a PVC', async () => {
    await core.createNamespacedPersistentVolumeClaim({
      namespace: ns,
      body: {
        metadata: { name: 'data' },
        spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '10Mi' } } },
      },
    });
    const t0 = Date.now();
    await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        metadata: { name: app },
        spec: {
          replicas: 1,
          selector: { matchLabels: { app } },
          strategy: { type: 'Recreate' },
          template: {
            metadata: { labels: { app } },
            spec: {
              terminationGracePeriodSeconds: 0,
              containers: [
                {
                  name: 'main',
                  image: testImage,
                  imagePullPolicy: 'IfNotPresent',
                  command: ['sh', '-c', `mkdir -p /www && echo "${page}" > /www/index.html && date >> /data/boots && exec httpd -f -p 8080 -h /www`],
                  ports: [{ containerPort: 8080 }],
                  readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
                  volumeMounts: [{ name: 'data', mountPath: '/data' }],
                },
              ],
              volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'data' } }],
            },
          },
        },
      },
    });
    const pod = await runningPod();
    podName = pod.metadata!.name!;
    console.log(`[smoke] deployment pod ready ${Date.now() - t0} ms after create (image ${testImage}, includes PVC provisioning)`);
    const pvc = await core.readNamespacedPersistentVolumeClaim({ name: 'data', namespace: ns });
    expect(pvc.status?.phase).toBe('Bound');
  }, 120_000);

  test('exec into the pod through the API server', async () => {
    expect(podName).not.toBe('');
    const r = await execInPod(kc, ns, podName, 'main', ['sh', '-c', 'cat /www/index.html; echo err >&2; id -u']);
    expect(r.status).toBe('Success');
    expect(r.stdout).toBe(`${page}\n0\n`);
    expect(r.stderr).toBe('err\n');
    const fail = await execInPod(kc, ns, podName, 'main', ['sh', '-c', 'exit 3']);
    expect(fail.status).toBe('Failure');
  }, 60_000);

  test('port-forward to the pod through the API server', async () => {
    expect(podName).not.toBe('');
    const fwd = await forwardPort(kc, ns, podName, 8080);
    try {
      const res = await httpGet(fwd.port);
      expect(res).toMatch(/^HTTP\/1\.[01] 200/);
      expect(res).toContain(page);
      expect(await httpGet(fwd.port)).toContain(page); // a second connection over a new stream
    } finally {
      await fwd.close();
    }
  }, 60_000);

  test('a Service is reached by DNS name from another pod', async () => {
    await core.createNamespacedService({
      namespace: ns,
      body: { metadata: { name: app }, spec: { selector: { app }, ports: [{ port: 80, targetPort: 8080 }] } },
    });
    const t0 = Date.now();
    // retry: kube-proxy may need a moment to program the new Service
    const client = await runPod(
      'client',
      {},
      `for i in $(seq 30); do timeout 3 wget -qO- http://${app}.${ns}.svc.cluster.local/ && exit 0; sleep 1; done; exit 1`,
    );
    console.log(`[smoke] client pod finished ${Date.now() - t0} ms after create`);
    expect(client.phase).toBe('Succeeded');
    expect(client.logs).toContain(page);
  }, 120_000);

  test('the PVC keeps its data when the pod is replaced', async () => {
    expect(podName).not.toBe('');
    const w = await execInPod(kc, ns, podName, 'main', ['sh', '-c', `echo "${page}" > /data/note && sync`]);
    expect(w.status).toBe('Success');
    await core.deleteNamespacedPod({ name: podName, namespace: ns, gracePeriodSeconds: 0 });
    const old = podName;
    const pod = await waitFor(
      'a replacement pod',
      async () => (await core.listNamespacedPod({ namespace: ns, labelSelector: `app=${app}` })).items.find((p) => p.metadata?.name !== old && ready(p)),
      90_000,
    );
    podName = pod.metadata!.name!;
    const r = await execInPod(kc, ns, podName, 'main', ['sh', '-c', 'cat /data/note; wc -l < /data/boots']);
    expect(r.status).toBe('Success');
    expect(r.stdout).toBe(`${page}\n2\n`);
  }, 120_000);

  test('a NetworkPolicy is enforced', async () => {
    await net.createNamespacedNetworkPolicy({
      namespace: ns,
      body: {
        metadata: { name: 'only-friends' },
        spec: {
          podSelector: { matchLabels: { app } },
          policyTypes: ['Ingress'],
          ingress: [{ _from: [{ podSelector: { matchLabels: { role: 'friend' } } }] }],
        },
      },
    });
    // (client-node's model calls the "from" field _from)
    // the policy takes a moment to be programmed: wait until the stranger is refused ...
    const stranger = await runPod(
      'stranger',
      { role: 'stranger' },
      `for i in $(seq 30); do timeout 3 wget -qO- http://${app}/ >/dev/null 2>&1 || { echo blocked; exit 0; }; sleep 1; done; echo still-reachable; exit 1`,
    );
    expect(stranger.logs.trim()).toBe('blocked');
    // ... while a pod the policy allows still gets through
    const friend = await runPod('friend', { role: 'friend' }, `for i in $(seq 10); do timeout 3 wget -qO- http://${app}/ && exit 0; sleep 1; done; exit 1`);
    expect(friend.phase).toBe('Succeeded');
    expect(friend.logs).toContain(page);
  }, 120_000);
});
