// The kubernetes runtime's part of `npm run bench` (issue 12), called by bench/foundation.ts and
// runnable alone: `node bench/kubernetes.ts [--quick]` prints its own JSON line. Needs the test
// cluster (KUBECONFIG; docs/testing.md) with den/base:bookworm imported; without KUBECONFIG it
// prints a [skip] line and reports null numbers. Progress goes to stderr.
//
// What it measures, run by run interleaved on the same cluster:
//  - den: the kubernetes driver's start of a workspace with a two-service environment (each
//    with a TCP readiness check), to the agent's first request to den (a stand-in server that
//    counts it), with the breakdown from the build log: namespace + base objects applied, the
//    services Ready, the workspace pod running, the agent's first request;
//  - reference: `kubectl apply` of the very same objects (rendered by den's own code, with the
//    Secret), then `kubectl wait` until every pod is Ready, and the same agent request.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { BAKED_AGENT } from '../server/runtimes/kubernetes/agent-delivery.ts';
import { createKubernetesDriver } from '../server/runtimes/kubernetes/driver.ts';
import { AGENT_SECRET, names, namespaceObject, renderWorkspace } from '../server/runtimes/kubernetes/objects.ts';
import type { ServicePlan, WorkspacePlan } from '../server/runtimes/driver.ts';
import { median, round } from './support.ts';

const run = promisify(execFile);
const IMAGE = 'den/base:bookworm';
const KUBECTL = process.env.KUBECTL ?? '/var/cache/den-k8s/v1.34.4/bin/kubectl';

export async function kubernetesBenchmark(options: { quick?: boolean; say?: (line: string) => void } = {}): Promise<Record<string, unknown>> {
  const say = options.say ?? ((line: string) => process.stderr.write(`${line}\n`));
  const runs = options.quick ? 1 : Number(process.env.BENCH_KUBE_RUNS ?? 5);
  if (!process.env.KUBECONFIG) {
    say('[skip] kubernetes benchmark: KUBECONFIG is not set (export KUBECONFIG=$(bash test/cluster/up.sh | tail -1))');
    return { kube_create_ready_median_ms: null, kube_reference_ready_median_ms: null };
  }
  const dataDir = mkdtempSync(join(tmpdir(), 'den-bench-kube-'));
  const instance = `bk-${randomUUID().slice(0, 6)}`;
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
  const driver = await createKubernetesDriver({ log: pino({ level: 'silent' }), dataDir, instance });
  const den: number[] = [];
  const reference: number[] = [];
  const phases: Record<string, number[]> = { objects_applied: [], services_ready: [], pod_running: [], agent_connected: [] };
  try {
    for (let i = 0; i < runs; i++) {
      // den
      const token = `bench-${randomUUID()}`;
      const plan = makePlan(randomUUID(), url);
      const marks: Record<string, number> = {};
      const t0 = performance.now();
      await driver.start(plan, {
        signal: new AbortController().signal,
        secret: async () => token,
        log: (line) => {
          if (/^Started service/.test(line) && !marks.objects_applied) marks.objects_applied = performance.now() - t0;
          if (/^Applied the workspace Deployment/.test(line)) marks.services_ready = performance.now() - t0;
        },
      });
      marks.pod_running = performance.now() - t0;
      const connected = await until(() => dialed.get(token), 60_000);
      marks.agent_connected = connected - t0;
      den.push(marks.agent_connected);
      for (const key of Object.keys(phases)) if (marks[key] !== undefined) phases[key].push(marks[key]);
      say(`kubernetes: den create -> agent connected ${round(marks.agent_connected)} ms (${JSON.stringify(Object.fromEntries(Object.entries(marks).map(([k, v]) => [k, round(v)])))})`);
      // the URL the driver gave its pods (the node relay), for the reference's pods too
      const agentUrl = (await run(KUBECTL, ['-n', driver.namespaceOf(plan.workspace.id), 'get', 'deployment', 'den-workspace',
        '-o', 'jsonpath={.spec.template.spec.containers[0].env[?(@.name=="DEN_AGENT_URL")].value}'])).stdout.trim();
      await driver.delete(plan.workspace, { signal: new AbortController().signal, log: () => {} });

      // reference: the same objects through kubectl
      const refToken = `ref-${randomUUID()}`;
      const refPlan = makePlan(randomUUID(), url);
      const rendered = renderWorkspace({ instance: `${instance}r`, plan: refPlan, agentUrl, agent: BAKED_AGENT, secretGeneration: 'ref', replicas: 1, ingressFrom: [] });
      const namespace = names.namespace(`${instance}r`, refPlan.workspace.id);
      const secret = { apiVersion: 'v1', kind: 'Secret', metadata: { name: AGENT_SECRET, namespace }, stringData: { DEN_AGENT_TOKEN: refToken } };
      const file = join(dataDir, `ref-${i}.json`);
      const items = [namespaceObject(`${instance}r`, refPlan.workspace), ...rendered.base, secret, ...rendered.services.flatMap((s) => s.objects), rendered.workspace];
      // client-node's models name `from` and `default` with a leading underscore; kubectl wants the wire names
      writeFileSync(file, JSON.stringify({ apiVersion: 'v1', kind: 'List', items }).replaceAll('"_from":', '"from":').replaceAll('"_default":', '"default":'));
      const r0 = performance.now();
      await run(KUBECTL, ['apply', '--server-side', '-f', file]);
      await until(async () => (await run(KUBECTL, ['-n', namespace, 'get', 'pods', '-o', 'name'])).stdout.split('\n').filter(Boolean).length >= 3 || undefined, 60_000);
      await run(KUBECTL, ['-n', namespace, 'wait', '--for=condition=Ready', 'pod', '--all', '--timeout=120s']);
      const ready = performance.now() - r0;
      const refConnected = (await until(() => dialed.get(refToken), 60_000)) - r0;
      reference.push(refConnected);
      say(`kubernetes: reference kubectl apply -> all pods Ready ${round(ready)} ms, agent connected ${round(refConnected)} ms`);
      await run(KUBECTL, ['delete', 'namespace', namespace, '--wait=true']);
    }
  } finally {
    await driver.close();
    server.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
  return {
    kube_runs: runs,
    kube_create_ready_median_ms: round(median(den)),
    kube_reference_ready_median_ms: round(median(reference)),
    kube_overhead_median_ms: round(median(den) - median(reference)),
    ...Object.fromEntries(Object.entries(phases).map(([key, values]) => [`kube_${key}_median_ms`, round(median(values))])),
  };
}

function makePlan(id: string, url: string): WorkspacePlan {
  const service = (name: string): ServicePlan => ({
    name, image: IMAGE, env: {}, volumes: [], dependsOn: [], ports: [{ port: 8080, preview: false }],
    command: ['node', '-e', 'require("http").createServer((q, s) => s.end("ok")).listen(Number(process.env.PORT))'],
    readiness: { tcp: 8080, timeoutMs: 30_000, intervalMs: 1_000 },
  });
  return {
    workspace: { id, name: 'bench', ownerId: 'bench', ownerName: 'bench' },
    image: IMAGE, resources: {}, home: {}, env: {}, agent: { name: 'main', url, revision: 'r1', delivery: { kind: 'image' } },
    secrets: [{ name: 'agent-token', env: 'DEN_AGENT_TOKEN', agent: 'main' }],
    services: [service('api'), service('db')],
  };
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
