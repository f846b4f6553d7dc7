// Live sync on the kubernetes runtime (`npm run bench:sync:kubernetes`): one-file edit ->
// visible in the service pod, p50/p99 over --edits edits, one every --interval ms, against
// `kubectl cp` of one file into the same pod (median of 10), in the same run. Needs the test
// cluster (KUBECONFIG), whose node is this machine: the benchmark writes into the workspace's
// home claim from the host (what an editor in the workspace does to the same inodes) and reads
// the file where the service's agent sees it (/proc/PID/root), so timing needs no exec round trip.
// Every agent is the bundle this checkout serves (den/base-os has none). Progress goes to stderr;
// the last stdout line is one JSON object.
//
//   node bench/sync-kubernetes.ts [--edits 200] [--interval 100]
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { pino } from 'pino';
import type { SyncStatus } from '../protocol/sync.ts';
import type { TemplateInput } from '../protocol/template.ts';
import { ensureImagesInCluster, kubeSkipReason, loadKubeConfig, testImage } from '../test/cluster/kube.ts';
import { startTestServer } from '../test/support/harness.ts';
import { waitForWorkspaceReady } from '../test/support/templates.ts';
import { api, setupOwner } from '../test/support/users.ts';
import { measureEdits, median, numberOption, round, waitFor } from './support.ts';

const say = (line: string) => process.stderr.write(`${line}\n`);
const EDITS = numberOption('--edits', 200);
const INTERVAL_MS = numberOption('--interval', 100);
const IMAGE = 'den/base-os:bookworm';
const KUBECTL = process.env.KUBECTL ?? '/var/cache/den-k8s/v1.34.4/bin/kubectl';
const MARK = `bench-edit-${randomUUID().slice(0, 8)}`;

if (kubeSkipReason) {
  say(`[skip] sync benchmark on kubernetes: ${kubeSkipReason}`);
  process.exit(0);
}

const template: TemplateInput = {
  name: 'bench-sync-kube',
  workspace: { image: IMAGE, startup: [{ name: 'folders', run: 'mkdir -p "$HOME/edit"', blocking: true }] },
  environment: {
    services: {
      edit: { image: IMAGE, command: ['sleep', '100000'], env: { BENCH_MARK: MARK }, sync: [{ from: '~/edit', to: '/tmp/edit' }] },
    },
  },
};

await ensureImagesInCluster(IMAGE);
const { createKubernetesDriver } = await import('../server/runtimes/kubernetes/driver.ts');
const server = await startTestServer({
  listen: true,
  driver: (config) => createKubernetesDriver({
    log: pino({ level: 'silent' }), dataDir: config.dataDir, instance: `bench-${randomUUID().slice(0, 8)}`, downloaderImage: testImage, stopGraceSeconds: 2, startTimeoutMs: 150_000,
  }),
});
const results: Record<string, unknown> = { date: new Date().toISOString(), runtime: 'kubernetes', node: process.version, cpus: cpus().length, loadavg_start: loadavg(), edits: EDITS, interval_ms: INTERVAL_MS };
try {
  const owner = await setupOwner(server.app);
  const client = api(server.app, owner.token);
  const pushed = await client.post('/api/v1/templates', { files: { 'template.yaml': JSON.stringify(template) }, activate: true });
  if (pushed.status !== 201) throw new Error(JSON.stringify(pushed.json));
  say('starting the workspace');
  const started = Date.now();
  const created = await client.post('/api/v1/workspaces', { name: 'bench', template: 'bench-sync-kube' });
  const workspaceId = created.json.workspace.id as string;
  await waitForWorkspaceReady(client, owner.username, 'bench', 240_000);
  const status = async () => ((await client.get(`/api/v1/workspaces/${owner.username}/bench/sync`)).json.items as SyncStatus[])[0];
  await waitFor(async () => {
    const now = await status();
    if (now.state === 'error') throw new Error(now.lastError ?? 'sync error');
    return now.state === 'watching' && now.inSync;
  }, 120_000, 'the first copy', 100);
  results.create_to_first_sync_ms = Date.now() - started;

  // the home claim's folder on this node, and the service container's root as its agent sees it
  const namespace = (server.den.driver as unknown as { namespaceOf(id: string): string }).namespaceOf(workspaceId);
  const core = loadKubeConfig().makeApiClient(CoreV1Api);
  const claim = await core.readNamespacedPersistentVolumeClaim({ name: 'den-home', namespace });
  const volume = await core.readPersistentVolume({ name: claim.spec!.volumeName! });
  const home = volume.spec!.hostPath?.path ?? volume.spec!.local?.path;
  if (!home) throw new Error('the home claim is not a folder on this node (run the benchmark on the test cluster)');
  const agentPid = readdirSync('/proc').filter((pid) => /^\d+$/.test(pid)).find((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[1] === '/opt/den/agent/agent.mjs'
        && readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`BENCH_MARK=${MARK}`);
    } catch {
      return false;
    }
  });
  if (!agentPid) throw new Error('the agent of the edit service is not a process of this machine');

  say(`${EDITS} edits, one every ${INTERVAL_MS} ms`);
  const source = join(home, 'edit', 'edited.txt');
  const edits = await measureEdits(source, `/proc/${agentPid}/root/tmp/edit/edited.txt`, EDITS, INTERVAL_MS);
  results.edit_p50_ms = edits.p50;
  results.edit_p99_ms = edits.p99;
  results.edit_max_ms = edits.max;
  results.den_reported_latency_ms = (await status()).lastApplied?.latencyMs;
  const [pod] = (await core.listNamespacedPod({ namespace, labelSelector: 'den.dev/service=edit' })).items;
  const copies: number[] = [];
  for (let i = 0; i < 10; i++) {
    const copyStarted = performance.now();
    execFileSync(KUBECTL, ['cp', '-c', 'service', source, `${namespace}/${pod.metadata!.name}:/tmp/edited-by-kubectl-cp.txt`], { stdio: 'ignore' });
    copies.push(performance.now() - copyStarted);
  }
  results.kubectl_cp_one_file_ms = round(median(copies));
  say(`edits: p50 ${results.edit_p50_ms} ms, p99 ${results.edit_p99_ms} ms (kubectl cp of one file: ${results.kubectl_cp_one_file_ms} ms)`);
} finally {
  results.loadavg_end = loadavg();
  // the workspace's namespace goes with it
  await server.den.driver.collectGarbage?.(async () => false).catch((error: unknown) => say(`removing the namespace failed: ${String(error)}`));
  await server.close();
}
process.stdout.write(`${JSON.stringify(results)}\n`);
