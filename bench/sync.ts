// The live sync benchmark (`npm run bench:sync`), on the docker runtime: a workspace and two
// services (den/node:24), each service syncing a folder of the workspace. den runs in this process
// (the test harness's server over SQLite) with the real agents in the containers. The benchmark
// writes into the workspace's home volume from the host (what an editor in the workspace does to
// the same inodes) and reads the service's files from its container's upper layer, so timing needs
// no exec round trip. Side by side in the same run, the plain tool: `docker cp`.
//  - one-file edit -> visible in the service: p50/p99 over --edits edits, one every --interval ms;
//    reference: `docker cp` of one file (median of 20);
//  - two-way: one-file edit in a service -> visible in the workspace, the same way (the service's
//    synced folder is a volume, written from the host); reference: `docker cp` out of the container;
//  - a burst of 1,000 changed files -> converged (both hashes equal, nothing pending);
//  - initial sync of --files files / --mb MB (a full copy after `den sync restart`) against
//    `docker cp` of the same tree into the same container;
//  - CPU of both agents over --idle seconds while watching that tree, idle.
// Progress goes to stderr; the last stdout line is one JSON object.
//
//   node bench/sync.ts [--edits 200] [--interval 100] [--files 10000] [--mb 200] [--idle 10] [--profile FILE]
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import type { SyncStatus } from '../protocol/sync.ts';
import type { TemplateInput } from '../protocol/template.ts';
import { createDockerDriver } from '../server/runtimes/docker/driver.ts';
import { startTestServer } from '../test/support/harness.ts';
import { waitForWorkspaceReady } from '../test/support/templates.ts';
import { api, setupOwner } from '../test/support/users.ts';
import { measureEdits, median, numberOption, processCpuMs, processCpuSplitMs, round, waitFor, writeTree } from './support.ts';

const say = (line: string) => process.stderr.write(`${line}\n`);
const EDITS = numberOption('--edits', 200);
const INTERVAL_MS = numberOption('--interval', 100);
const FILES = numberOption('--files', 10_000);
const MEGABYTES = numberOption('--mb', 200);
const IDLE_SECONDS = numberOption('--idle', 10);
const IMAGE = 'den/node:24';
const SETTLE_TIMEOUT_MS = 300_000;

const template: TemplateInput = {
  name: 'bench-sync',
  workspace: { image: IMAGE, startup: [{ name: 'folders', run: 'mkdir -p "$HOME/edit" "$HOME/big" "$HOME/back"', blocking: true }] },
  environment: {
    services: {
      edit: { image: IMAGE, command: ['sleep', 'infinity'], sync: [{ from: '~/edit', to: '/tmp/edit' }] },
      big: { image: IMAGE, command: ['sleep', 'infinity'], sync: [{ from: '~/big', to: '/tmp/big' }] },
      // a volume, so the host writes the same inodes the service's agent watches (an overlay's upper layer would not notify it)
      back: { image: IMAGE, command: ['sleep', 'infinity'], volumes: [{ name: 'back', path: '/tmp/back' }], sync: [{ from: '~/back', to: '/tmp/back', mode: 'two-way' }] },
    },
  },
};

const docker = new Dockerode();
const instance = `den-bench-${randomUUID().slice(0, 8)}`;
const server = await startTestServer({
  listen: true,
  driver: async () => createDockerDriver({
    log: pino({ level: 'silent' }), docker: docker as never, agentBundleDir: join(mkdtempSync(join(tmpdir(), 'den-bench-sync-')), 'agent'), stopGraceSeconds: 2, instance,
  }),
});
const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, cpus: cpus().length, loadavg_start: loadavg(), edits: EDITS, interval_ms: INTERVAL_MS, files: FILES, mb: MEGABYTES };
try {
  const owner = await setupOwner(server.app);
  const client = api(server.app, owner.token);
  const pushed = await client.post('/api/v1/templates', { files: { 'template.yaml': JSON.stringify(template) }, activate: true });
  if (pushed.status !== 201) throw new Error(JSON.stringify(pushed.json));
  say('starting the workspace');
  const created = await client.post('/api/v1/workspaces', { name: 'bench', template: 'bench-sync' });
  const workspaceId = created.json.workspace.id as string;
  await waitForWorkspaceReady(client, owner.username, 'bench', 180_000);
  const containers = await docker.listContainers({ filters: JSON.stringify({ label: [`den.workspace.id=${workspaceId}`] }) });
  const containerOf = (kind: string, service?: string) => containers.find((c) => c.Labels['den.kind'] === kind && (!service || c.Labels['den.service'] === service))!;
  const workspace = await docker.getContainer(containerOf('workspace').Id).inspect();
  const home = workspace.Mounts.find((m) => m.Destination === '/home/den')!.Source;
  const upper = async (service: string) => ((await docker.getContainer(containerOf('service', service).Id).inspect()).GraphDriver.Data as unknown as { UpperDir: string }).UpperDir;
  const editUpper = await upper('edit');
  const bigContainer = containerOf('service', 'big').Id;
  const bigUpper = await upper('big');
  const agentPid = async (id: string) => {
    const top = await docker.getContainer(id).top({ ps_args: '-eo pid,args' }) as { Processes: string[][] };
    return Number(top.Processes.find((row) => row.join(' ').includes('agent') && !row.join(' ').includes('docker-init'))![0]);
  };
  const status = async (service: string) => ((await client.get(`/api/v1/workspaces/${owner.username}/bench/sync`)).json.items as SyncStatus[]).find((s) => s.service === service)!;
  const settled = async (service: string, since: number) => {
    let last: SyncStatus | undefined;
    await waitFor(async () => {
      last = await status(service);
      if (last.state === 'error') throw new Error(last.lastError ?? 'sync error');
      return last.state === 'watching' && last.inSync && last.pendingFiles === 0 && (last.lastApplied?.batch ?? 0) > since;
      // polled gently: the server relaying the sync runs in this process
    }, SETTLE_TIMEOUT_MS, `the ${service} sync to settle`, 50);
    return last!;
  };
  // a new volume's folder is root's: the service's user (den) must own it to take the first copy
  execFileSync('docker', ['exec', '-u', '0', containerOf('service', 'back').Id, 'chown', 'den:den', '/tmp/back']);
  const restartedBack = await client.post(`/api/v1/workspaces/${owner.username}/bench/sync/restart`, { service: 'back' });
  if (restartedBack.status !== 200) throw new Error(JSON.stringify(restartedBack.json));
  await settled('edit', 0);
  await settled('big', 0);
  await settled('back', 0);

  // 1. one-file edits at a steady rate
  say(`${EDITS} edits, one every ${INTERVAL_MS} ms`);
  const source = join(home, 'edit', 'edited.txt');
  const edits = await measureEdits(source, join(editUpper, 'tmp', 'edit', 'edited.txt'), EDITS, INTERVAL_MS);
  results.edit_p50_ms = edits.p50;
  results.edit_p99_ms = edits.p99;
  results.edit_max_ms = edits.max;
  results.den_reported_latency_ms = (await status('edit')).lastApplied?.latencyMs;
  const copies: number[] = [];
  for (let i = 0; i < 20; i++) {
    const started = performance.now();
    execFileSync('docker', ['cp', source, `${containerOf('service', 'edit').Id}:/tmp/edited-by-docker-cp.txt`]);
    copies.push(performance.now() - started);
  }
  results.docker_cp_one_file_ms = round(median(copies));
  say(`edits: p50 ${results.edit_p50_ms} ms, p99 ${results.edit_p99_ms} ms (docker cp of one file: ${results.docker_cp_one_file_ms} ms)`);

  // 1b. two-way: edits made in the service, seen in the workspace
  say(`${EDITS} edits in a two-way service, one every ${INTERVAL_MS} ms`);
  const backContainer = containerOf('service', 'back');
  const backVolume = backContainer.Mounts.find((m) => m.Destination === '/tmp/back')!.Source;
  const back = await measureEdits(join(backVolume, 'edited.txt'), join(home, 'back', 'edited.txt'), EDITS, INTERVAL_MS);
  results.two_way_edit_p50_ms = back.p50;
  results.two_way_edit_p99_ms = back.p99;
  results.two_way_conflicts = (await status('back')).conflicts;
  const copiesOut: number[] = [];
  for (let i = 0; i < 20; i++) {
    const started = performance.now();
    execFileSync('docker', ['cp', `${backContainer.Id}:/tmp/back/edited.txt`, join(tmpdir(), `den-bench-docker-cp-${process.pid}.txt`)]);
    copiesOut.push(performance.now() - started);
  }
  results.docker_cp_one_file_out_ms = round(median(copiesOut));
  say(`two-way edits: p50 ${results.two_way_edit_p50_ms} ms, p99 ${results.two_way_edit_p99_ms} ms (docker cp of one file out: ${results.docker_cp_one_file_out_ms} ms)`);

  // 2. a burst of 1,000 changed files
  say('a burst of 1,000 files');
  const before = (await status('edit')).lastApplied!.batch;
  const burstStarted = Date.now();
  for (let i = 0; i < 1000; i++) {
    const dir = join(home, 'edit', `burst${i % 20}`);
    if (i < 20) mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `f${i}.ts`), `export const value = ${i};\n`.repeat(1 + (i % 10)));
  }
  const burst = await settled('edit', before);
  results.burst_1000_converged_ms = Date.parse(burst.lastApplied!.at) - burstStarted;
  results.burst_hashes_equal = burst.sourceHash === burst.targetHash;
  say(`burst: converged in ${results.burst_1000_converged_ms} ms`);

  // 3. initial sync of a large tree against docker cp
  say(`writing ${FILES} files / ${MEGABYTES} MB into the workspace`);
  const tree = join(home, 'big');
  writeTree(tree, FILES, MEGABYTES);
  await settled('big', (await status('big')).lastApplied?.batch ?? 0);
  // Moved aside, not removed: ext4 scans the inodes deleted in the last 30 s on every file it
  // creates (recently_deleted, in ext4_new_inode), so a copy that starts right after removing
  // 10,000 files spends most of its time there (perf: 55 % of the service agent's CPU) and
  // `docker cp`, which starts later, does not.
  execFileSync('docker', ['exec', bigContainer, 'mv', '/tmp/big', '/tmp/big-before']);
  say('initial sync (den sync restart after emptying the target)');
  const pids = { workspace: await agentPid(containerOf('workspace').Id), service: await agentPid(bigContainer) };
  const cpuAtStart = { workspace: processCpuSplitMs(pids.workspace)!, service: processCpuSplitMs(pids.service)!, server: processCpuSplitMs(process.pid)! };
  const profile = await startProfile();
  const initialStarted = Date.now();
  const restarted = await client.post(`/api/v1/workspaces/${owner.username}/bench/sync/restart`, { service: 'big' });
  if (restarted.status !== 200) throw new Error(JSON.stringify(restarted.json));
  const initial = await settled('big', 0);
  results.initial_sync_ms = Date.parse(initial.lastApplied!.at) - initialStarted;
  results.initial_hashes_equal = initial.sourceHash === initial.targetHash;
  await profile?.();
  const spent = (pid: number, start: { user: number; system: number }) => {
    const now = processCpuSplitMs(pid)!;
    return { user: now.user - start.user, system: now.system - start.system };
  };
  // CPU time of each side during the copy, user (den's code) and system (the kernel's: files, sockets)
  results.initial_cpu_ms = {
    workspace_agent: spent(pids.workspace, cpuAtStart.workspace),
    service_agent: spent(pids.service, cpuAtStart.service),
    server: spent(process.pid, cpuAtStart.server),
  };
  const copyStarted = performance.now();
  execFileSync('docker', ['cp', `${tree}/.`, `${bigContainer}:/tmp/big-by-docker-cp`]);
  results.docker_cp_tree_ms = round(performance.now() - copyStarted);
  results.initial_vs_docker_cp = round(Number(results.initial_sync_ms) / Number(results.docker_cp_tree_ms));
  results.target_files = countFiles(join(bigUpper, 'tmp', 'big'));
  say(`initial sync: ${results.initial_sync_ms} ms; docker cp: ${results.docker_cp_tree_ms} ms`);

  // 4. idle CPU of both agents watching the large tree
  const cpuBefore = { workspace: processCpuMs(pids.workspace)!, service: processCpuMs(pids.service)! };
  say(`idle for ${IDLE_SECONDS} s`);
  await new Promise((resolve) => setTimeout(resolve, IDLE_SECONDS * 1000));
  results.idle_cpu_percent_workspace_agent = round(((processCpuMs(pids.workspace)! - cpuBefore.workspace) / (IDLE_SECONDS * 1000)) * 100);
  results.idle_cpu_percent_service_agent = round(((processCpuMs(pids.service)! - cpuBefore.service) / (IDLE_SECONDS * 1000)) * 100);
  results.watch_mode = (await status('big')).watchMode;
} finally {
  results.loadavg_end = loadavg();
  await server.close();
}
process.stdout.write(`${JSON.stringify(results)}\n`);

/** With `--profile FILE`: a CPU profile of this process (den's server) during the initial copy, for Chrome's DevTools. */
async function startProfile(): Promise<(() => Promise<void>) | undefined> {
  const index = process.argv.indexOf('--profile');
  if (index < 0) return undefined;
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return async () => {
    const { profile } = await session.post('Profiler.stop');
    writeFileSync(process.argv[index + 1], JSON.stringify(profile));
    session.disconnect();
  };
}

function countFiles(dir: string): number {
  if (!existsSync(dir)) return 0;
  return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((entry) => entry.isFile()).length;
}
