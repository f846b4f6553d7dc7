// The kubernetes runtime's part of `npm run bench` (issue 12), called by bench/foundation.ts and
// runnable alone: `node bench/kubernetes.ts [--quick] [--runs N] [--concurrent N] [--steady-ms MS]`
// prints its own JSON line. Needs the test cluster (KUBECONFIG; docs/testing.md) with
// den/base:bookworm imported (imported here when missing); without KUBECONFIG it prints a
// [skip] line and reports null numbers. Progress goes to stderr.
//
// What it measures on the same cluster:
//  1. create -> agent connected, run by run interleaved:
//     - den: the kubernetes driver's start of a workspace with a two-service environment (each
//       with a TCP readiness check), to the agent's first request to den (a stand-in server that
//       notes it), with the breakdown: den's API calls until the workspace Deployment is applied
//       (and how many requests the whole create made), then each pod's steps as one watch of the
//       bench sees them (created, scheduled — which includes provisioning the home claim, as the
//       storage class binds on first consumer —, sandbox and volumes ready, init containers done,
//       container running, Ready), and the agent's first request;
//     - reference: `kubectl apply --server-side` of the very same objects (rendered by den's own
//       code, with the Secret), timed by the same watch until every pod is Ready and the agent
//       made the same request.
//  2. N concurrent creates (default 20) of that workspace with small memory requests on the single
//     node, then N concurrent deletes, until every namespace is gone.
//  3. API requests: per create (sequential and concurrent), per delete, and per minute of steady
//     state with the N workspaces running and den observing them (the reconciler's way), counted
//     in-process on undici's diagnostics channel (client-node's HTTP client): a watch is one
//     long request, a poll would be one per interval.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CoreV1Api, KubeConfig, Watch, type V1Pod } from '@kubernetes/client-node';
import { pino } from 'pino';
import { BAKED_AGENT } from '../server/runtimes/kubernetes/agent-delivery.ts';
import { createKubernetesDriver } from '../server/runtimes/kubernetes/driver.ts';
import { AGENT_SECRET, LABEL_KIND, LABEL_MANAGED, LABEL_SERVICE, names, namespaceObject, renderWorkspace, secretKey, selector } from '../server/runtimes/kubernetes/objects.ts';
import type { ServicePlan, WorkspacePlan } from '../server/runtimes/driver.ts';
import { median, numberOption, round } from './support.ts';

const run = promisify(execFile);
const IMAGE = 'den/base:bookworm';
const KUBECTL = process.env.KUBECTL ?? '/var/cache/den-k8s/v1.34.4/bin/kubectl';
/** the bench's own pod watch selects on this too, so its requests are told apart from den's */
const BENCH_LABEL = 'den.dev/kind';
const MiB = 1024 ** 2;

/** Pod steps, in the order a pod goes through them, as the bench's watch first sees each. */
const STEPS = ['created', 'scheduled', 'sandbox', 'initialized', 'running', 'ready'] as const;
type Step = typeof STEPS[number];

export async function kubernetesBenchmark(options: { quick?: boolean; say?: (line: string) => void; args?: string[] } = {}): Promise<Record<string, unknown>> {
  const say = options.say ?? ((line: string) => process.stderr.write(`${line}\n`));
  const args = options.args ?? process.argv.slice(2);
  const runs = options.quick ? 1 : numberOption('--runs', Number(process.env.BENCH_KUBE_RUNS ?? 5), args);
  const concurrent = options.quick ? 3 : numberOption('--concurrent', 20, args);
  const steadyMs = options.quick ? 10_000 : numberOption('--steady-ms', 60_000, args);
  if (!process.env.KUBECONFIG) {
    say('[skip] kubernetes benchmark: KUBECONFIG is not set (export KUBECONFIG=$(bash test/cluster/up.sh | tail -1))');
    return { kube_create_ready_median_ms: null, kube_reference_ready_median_ms: null };
  }
  await ensureImage(say);
  const requests = countRequests();
  const dataDir = mkdtempSync(join(tmpdir(), 'den-bench-kube-'));
  const instance = `bk-${randomUUID().slice(0, 6)}`;
  const referenceInstance = `${instance}r`;
  // Stands in for den: the agent's first request is "agent connect".
  const dialed = new Map<string, number>();
  const server = createServer((request) => {
    const token = /Bearer (\S+)/.exec(request.headers.authorization ?? '')?.[1];
    if (token && !dialed.has(token)) dialed.set(token, performance.now());
    // no answer: the agent retries (a 401 would make it exit)
    request.socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const pods = await watchPods(kc);
  const driver = await createKubernetesDriver({ log: pino({ level: 'silent' }), dataDir, instance });
  const results: Record<string, unknown> = { kube_runs: runs };
  const noop = { signal: new AbortController().signal, log: () => {} };
  const referenceNamespaces = new Set<string>();
  try {
    // 1. sequential, den and reference interleaved
    const den: Sample[] = [];
    const reference: Sample[] = [];
    let agentUrl = '';
    for (let i = 0; i < runs; i++) {
      const token = `bench-${randomUUID()}`;
      const plan = makePlan(randomUUID(), url);
      const marks: Record<string, number> = {};
      const before = requests.count();
      const t0 = performance.now();
      await driver.start(plan, {
        signal: new AbortController().signal,
        secret: async () => token,
        log: (line) => { if (/^Applied the workspace Deployment/.test(line)) marks.applied = performance.now() - t0; },
      });
      marks.returned = performance.now() - t0;
      const createRequests = requests.count() - before;
      marks.agent = (await until(() => dialed.get(token), 60_000)) - t0;
      const namespace = driver.namespaceOf(plan.workspace.id);
      // the bench's watch may see the last pod update a moment after den's
      await until(() => pods.stepsOf(namespace, t0).workspace?.running, 5_000).catch(() => undefined);
      den.push({ total: marks.agent, marks, pods: pods.stepsOf(namespace, t0), requests: createRequests });
      say(`kubernetes: den create -> agent connected ${round(marks.agent)} ms; ${describeSample(den.at(-1)!)}`);
      agentUrl ||= (await run(KUBECTL, ['-n', namespace, 'get', 'deployment', 'den-workspace',
        '-o', 'jsonpath={.spec.template.spec.containers[0].env[?(@.name=="DEN_AGENT_URL")].value}'])).stdout.trim();
      const deleteBefore = requests.count();
      const d0 = performance.now();
      await driver.delete(plan.workspace, noop);
      results.kube_delete_ms = round(performance.now() - d0);
      results.kube_requests_per_delete = requests.count() - deleteBefore;

      // reference: the same objects through kubectl, timed by the same watch
      const refToken = `ref-${randomUUID()}`;
      const refPlan = makePlan(randomUUID(), url);
      const rendered = renderWorkspace({ instance: referenceInstance, plan: refPlan, agentUrl, agent: BAKED_AGENT, secretGeneration: 'ref', replicas: 1, ingressFrom: [] });
      const refNamespace = names.namespace(referenceInstance, refPlan.workspace.id);
      const secret = { apiVersion: 'v1', kind: 'Secret', metadata: { name: AGENT_SECRET, namespace: refNamespace }, stringData: { [secretKey('agent-token')]: refToken } };
      const file = join(dataDir, `ref-${i}.json`);
      const items = [namespaceObject(referenceInstance, refPlan.workspace), ...rendered.base, secret, ...rendered.services.flatMap((s) => s.objects), rendered.workspace];
      // client-node's models name `from` and `default` with a leading underscore; kubectl wants the wire names
      writeFileSync(file, JSON.stringify({ apiVersion: 'v1', kind: 'List', items }).replaceAll('"_from":', '"from":').replaceAll('"_default":', '"default":'));
      referenceNamespaces.add(refNamespace);
      const r0 = performance.now();
      await run(KUBECTL, ['apply', '--server-side', '-f', file]);
      const refMarks: Record<string, number> = { applied: performance.now() - r0 };
      refMarks.returned = (await until(() => pods.allReady(refNamespace, 3), 120_000)) - r0;
      refMarks.agent = (await until(() => dialed.get(refToken), 60_000)) - r0;
      reference.push({ total: Math.max(refMarks.agent, refMarks.returned), marks: refMarks, pods: pods.stepsOf(refNamespace, r0) });
      say(`kubernetes: reference kubectl apply -> all Ready and agent connected ${round(reference.at(-1)!.total)} ms; ${describeSample(reference.at(-1)!)}`);
      await run(KUBECTL, ['delete', 'namespace', refNamespace, '--wait=true']);
      referenceNamespaces.delete(refNamespace);
    }
    Object.assign(results, summarize('kube', den), summarize('kube_reference', reference), {
      kube_create_ready_median_ms: round(median(den.map((s) => s.total))),
      kube_reference_ready_median_ms: round(median(reference.map((s) => s.total))),
      kube_overhead_median_ms: round(median(den.map((s) => s.total)) - median(reference.map((s) => s.total))),
      kube_requests_per_create: median(den.map((s) => s.requests!)),
    });

    // 2. concurrent creates, then the steady state with them running, then concurrent deletes
    const plans = Array.from({ length: concurrent }, () => makePlan(randomUUID(), url, { memoryBytes: 256 * MiB }));
    const tokens = plans.map(() => `bench-${randomUUID()}`);
    const c0 = performance.now();
    const createBefore = requests.count();
    const created = await Promise.allSettled(plans.map(async (plan, i) => {
      await driver.start(plan, { signal: new AbortController().signal, secret: async () => tokens[i], log: () => {} });
      return (await until(() => dialed.get(tokens[i]), 120_000)) - c0;
    }));
    const concurrentRequests = requests.count() - createBefore;
    const times = created.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failures = created.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error)?.message ?? r.reason)] : []));
    for (const failure of new Set(failures)) say(`kubernetes: a concurrent create failed: ${failure}`);
    say(`kubernetes: ${times.length}/${concurrent} concurrent creates connected; median ${round(median(times))} ms, last ${round(Math.max(...times))} ms; ${concurrentRequests} API requests`);
    Object.assign(results, {
      kube_concurrent: concurrent,
      kube_concurrent_succeeded: times.length,
      kube_concurrent_median_ms: round(median(times)),
      kube_concurrent_all_ms: round(Math.max(...times)),
      kube_concurrent_requests_per_create: round(concurrentRequests / concurrent),
    });

    const unobserve = driver.observe!(() => {});
    const steadyBefore = requests.snapshot();
    await new Promise((resolve) => setTimeout(resolve, steadyMs));
    const steady = requests.since(steadyBefore);
    unobserve();
    const gcBefore = requests.count();
    await driver.collectGarbage(() => true);
    const gcRequests = requests.count() - gcBefore;
    say(`kubernetes: steady state with ${times.length} workspaces, ${round(steadyMs / 1000)} s: ${steady.count} requests (${JSON.stringify(steady.byKind)}); a garbage collection pass: ${gcRequests}`);
    Object.assign(results, {
      kube_steady_requests_per_minute: round((steady.count * 60_000) / steadyMs),
      kube_steady_open_watches: requests.openWatches(),
      kube_gc_pass_requests: gcRequests,
    });

    const deleteBefore = requests.count();
    const x0 = performance.now();
    await Promise.all(plans.map((plan) => driver.delete(plan.workspace, noop)));
    const deleteAll = performance.now() - x0;
    const left = (await kc.makeApiClient(CoreV1Api).listNamespace({ labelSelector: selector(instance) })).items.length;
    say(`kubernetes: ${concurrent} concurrent deletes done in ${round(deleteAll)} ms, ${left} namespaces left; ${requests.count() - deleteBefore} API requests`);
    Object.assign(results, { kube_concurrent_delete_all_ms: round(deleteAll), kube_concurrent_namespaces_left: left });
  } finally {
    for (const id of await driver.listWorkspaceIds().catch(() => [])) await driver.delete({ id, name: 'bench', ownerId: 'bench', ownerName: 'bench' }, noop).catch(() => undefined);
    for (const namespace of referenceNamespaces) await run(KUBECTL, ['delete', 'namespace', namespace, '--wait=true']).catch(() => undefined);
    await driver.close();
    pods.close();
    requests.close();
    server.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
  return results;
}

interface Sample {
  total: number;
  /** applied: the workspace Deployment is in; returned: the driver's start returned (reference: every pod Ready); agent: its first request */
  marks: Record<string, number>;
  /** per pod kind (workspace, service), ms from t0 to each step (the slowest pod of a kind) */
  pods: Record<string, Partial<Record<Step, number>>>;
  requests?: number;
}

function describeSample(sample: Sample): string {
  const pods = Object.entries(sample.pods).map(([kind, steps]) => `${kind} ${STEPS.filter((s) => steps[s] !== undefined).map((s) => `${s} ${round(steps[s]!)}`).join(', ')}`);
  return `${Object.entries(sample.marks).map(([k, v]) => `${k} ${round(v)}`).join(', ')}; ${pods.join('; ')}${sample.requests !== undefined ? `; ${sample.requests} API requests` : ''}`;
}

/** Medians of every mark and pod step, as <prefix>_<what>_median_ms. */
function summarize(prefix: string, samples: Sample[]): Record<string, number> {
  const values = new Map<string, number[]>();
  const add = (key: string, value: number | undefined) => { if (value !== undefined) values.set(key, [...(values.get(key) ?? []), value]); };
  for (const sample of samples) {
    for (const [mark, value] of Object.entries(sample.marks)) add(`${prefix}_${mark}`, value);
    for (const [kind, steps] of Object.entries(sample.pods)) for (const step of STEPS) add(`${prefix}_${kind}_${step}`, steps[step]);
  }
  return Object.fromEntries([...values].map(([key, list]) => [`${key}_median_ms`, round(median(list))]));
}

/** One watch over every den-labeled pod, noting when each step of each pod is first seen. */
async function watchPods(kc: KubeConfig): Promise<{ stepsOf(namespace: string, t0: number): Sample['pods']; allReady(namespace: string, count: number): number | undefined; close(): void }> {
  const seen = new Map<string, { namespace: string; kind: string; steps: Partial<Record<Step, number>> }>();
  const onPod = (pod: V1Pod) => {
    const uid = pod.metadata?.uid ?? '';
    const labels = pod.metadata?.labels ?? {};
    let entry = seen.get(uid);
    if (!entry) seen.set(uid, (entry = { namespace: pod.metadata?.namespace ?? '', kind: labels[LABEL_SERVICE] ? 'service' : labels[LABEL_KIND] ?? 'pod', steps: {} }));
    const now = performance.now();
    const condition = (type: string) => pod.status?.conditions?.some((c) => c.type === type && c.status === 'True');
    const reached: Record<Step, boolean | undefined> = {
      created: true,
      scheduled: condition('PodScheduled'),
      sandbox: condition('PodReadyToStartContainers'),
      initialized: condition('Initialized'),
      running: pod.status?.containerStatuses?.some((s) => s.state?.running),
      ready: condition('Ready'),
    };
    for (const step of STEPS) if (reached[step]) entry.steps[step] ??= now;
  };
  const abort = await new Watch(kc).watch('/api/v1/pods', { labelSelector: `${LABEL_MANAGED}=true,${BENCH_LABEL}` },
    (phase, pod: V1Pod) => { if (phase === 'ADDED' || phase === 'MODIFIED') onPod(pod); },
    () => {});
  const podsOf = (namespace: string) => [...seen.values()].filter((entry) => entry.namespace === namespace);
  return {
    stepsOf(namespace, t0) {
      const byKind: Sample['pods'] = {};
      for (const entry of podsOf(namespace)) {
        const steps = (byKind[entry.kind] ??= {});
        for (const step of STEPS) if (entry.steps[step] !== undefined) steps[step] = Math.max(steps[step] ?? 0, entry.steps[step]! - t0);
      }
      return byKind;
    },
    allReady(namespace, count) {
      const entries = podsOf(namespace);
      if (entries.length < count || entries.some((entry) => entry.steps.ready === undefined)) return undefined;
      return Math.max(...entries.map((entry) => entry.steps.ready!));
    },
    close: () => abort.abort(),
  };
}

/** Kubernetes API requests this process makes (client-node's undici), by kind; the bench's own pod watch left out. */
function countRequests() {
  let total = 0;
  const byKind = new Map<string, number>();
  const open = new Set<object>();
  const onCreate = (message: unknown) => {
    const request = (message as { request: { method: string; path: string } }).request;
    if (request.path.includes(encodeURIComponent(`,${BENCH_LABEL}`))) return;
    const watch = /[?&]watch=(true|1)/.test(request.path);
    const kind = watch ? 'watch' : request.method;
    if (watch) open.add(request);
    total++;
    byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
  };
  const onDone = (message: unknown) => open.delete((message as { request: object }).request);
  diagnostics.subscribe('undici:request:create', onCreate);
  diagnostics.subscribe('undici:request:trailers', onDone);
  diagnostics.subscribe('undici:request:error', onDone);
  return {
    count: () => total,
    snapshot: () => ({ total, byKind: new Map(byKind) }),
    since(before: { total: number; byKind: Map<string, number> }) {
      return { count: total - before.total, byKind: Object.fromEntries([...byKind].map(([k, v]) => [k, v - (before.byKind.get(k) ?? 0)]).filter(([, v]) => (v as number) > 0)) };
    },
    openWatches: () => open.size,
    close() {
      diagnostics.unsubscribe('undici:request:create', onCreate);
      diagnostics.unsubscribe('undici:request:trailers', onDone);
      diagnostics.unsubscribe('undici:request:error', onDone);
    },
  };
}

function makePlan(id: string, url: string, resources: WorkspacePlan['resources'] = {}): WorkspacePlan {
  const service = (name: string): ServicePlan => ({
    name, image: IMAGE, env: {}, volumes: [], dependsOn: [], ports: [{ port: 8080, preview: false }],
    command: ['node', '-e', 'require("http").createServer((q, s) => s.end("ok")).listen(Number(process.env.PORT))'],
    readiness: { tcp: 8080, timeoutMs: 120_000, intervalMs: 1_000 },
  });
  return {
    workspace: { id, name: 'bench', ownerId: 'bench', ownerName: 'bench' },
    image: IMAGE, resources, home: {}, env: {}, agent: { name: 'main', url, revision: 'r1', delivery: { kind: 'image' } },
    secrets: [{ name: 'agent-token', env: 'DEN_AGENT_TOKEN', agent: 'main' }],
    services: [service('api'), service('db')],
  };
}

/** Imports den/base:bookworm into the cluster's containerd when it does not have it (the cluster may have been restarted). */
async function ensureImage(say: (line: string) => void): Promise<void> {
  const script = join(import.meta.dirname, '../test/cluster/import-image.sh');
  const { stdout } = await run('bash', [script, '--list']);
  if (stdout.split('\n').some((line) => line.trim() === IMAGE || line.trim() === `docker.io/${IMAGE}`)) return;
  say(`kubernetes: importing ${IMAGE} into the cluster`);
  await run('bash', [script, IMAGE], { maxBuffer: 16 * MiB });
}

async function until<T>(fn: () => T | undefined | Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(JSON.stringify(await kubernetesBenchmark({ quick: process.argv.includes('--quick') })));
}
