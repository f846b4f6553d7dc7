// The docker runtime's part of `npm run bench` (issue 5), called by bench/foundation.ts and
// runnable alone: `node bench/docker.ts [--quick]` prints its own JSON line. Needs a Docker
// engine and den's images (bash test/services/docker.sh; npm run images); without them it
// prints a [skip] line and reports null numbers. Progress goes to stderr.
//
// What it measures, each through a real den server on --runtime docker:
//  - create -> running (agent ready, startup scripts done) for the starter template with a
//    cached image, interleaved run by run with a bare `docker run` of the same image to a
//    comparable point (node in the container connects back to the host);
//  - the same for templates/node-api (two services with readiness checks), and the share of it
//    spent between "Started service X" and "Service X is ready" in the build log;
//  - an unchanged re-up of node-api (services started and tasks run: both should be 0) against
//    its create, and its `den test` run against the cached answer;
//  - N concurrent creates, then deleting everything and counting den-labeled objects left.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Dockerode from 'dockerode';
import { freePort, median, round, waitFor } from './support.ts';

const root = resolve(import.meta.dirname, '..');
const denBin = join(root, 'bin/den.js');
const STARTER_IMAGE = 'den/base:bookworm';
const NODE_IMAGE = 'den/node:24';
const READY_TIMEOUT_MS = 120_000;
const LABEL_WORKSPACE = 'den.workspace.id';

export interface DockerBenchOptions {
  /** small counts, to check the benchmark works (the numbers mean little) */
  quick?: boolean;
  say?: (line: string) => void;
}

interface Den {
  url: string;
  token: string;
  owner: string;
  child: ChildProcess;
  dataDir: string;
}

interface Counts {
  runs: number;
  envRuns: number;
  concurrent: number;
  /** kill -9 of a workspace container, one per run */
  detections: number;
}

/** Result keys (merged into the benchmark's JSON line); null when Docker is not available. */
export async function dockerBenchmark(options: DockerBenchOptions = {}): Promise<Record<string, unknown>> {
  const say = options.say ?? ((line: string) => process.stderr.write(`${line}\n`));
  const counts: Counts = options.quick
    ? { runs: 2, envRuns: 1, concurrent: 4, detections: 1 }
    : {
      runs: Number(process.env.BENCH_DOCKER_RUNS ?? 10),
      envRuns: Number(process.env.BENCH_DOCKER_ENV_RUNS ?? 5),
      concurrent: Number(process.env.BENCH_DOCKER_CONCURRENT ?? 20),
      detections: Number(process.env.BENCH_DOCKER_DETECTIONS ?? 5),
    };
  const docker = new Dockerode();
  const missing = await unavailable(docker);
  if (missing) {
    say(`[skip] docker benchmark: ${missing}.`);
    return {
      docker_create_ready_median_ms: null, docker_env_create_ready_median_ms: null, docker_run_baseline_ms: null,
      docker_concurrent_creates_ok: null, docker_reconcile_detection_median_ms: null, docker_env_reup_median_ms: null, leaked_objects: null, docker_skipped: missing,
    };
  }

  const results: Record<string, unknown> = { docker_counts: counts };
  const created = new Set<string>(); // workspace ids, to count leftovers by label
  const den = await startDen();
  try {
    await pushTemplate(den, 'starter');
    await pushTemplate(den, 'node-api');
    Object.assign(results, await starterVsBaseline(den, docker, counts.runs, created, say));
    Object.assign(results, await environment(den, counts.envRuns, created, say));
    Object.assign(results, await environmentLoop(den, counts.envRuns, created, say));
    Object.assign(results, await concurrentCreates(den, counts.concurrent, created, say));
    Object.assign(results, await reconcileDetection(den, docker, counts.detections, created, say));
  } catch (error) {
    // The rest of `npm run bench` still prints its line; the failure is in it, not lost.
    say(`docker benchmark failed: ${(error as Error).message}`);
    results.docker_error = (error as Error).message;
  } finally {
    await stopDen(den, say);
  }
  results.leaked_objects = await leakedObjects(docker, created);
  say(`  leaked den-labeled objects after deleting all ${created.size} workspaces: ${results.leaked_objects}`);
  return results;
}

async function unavailable(docker: Dockerode): Promise<string | undefined> {
  try {
    await docker.ping();
  } catch {
    return 'no Docker engine is reachable (run bash test/services/docker.sh)';
  }
  for (const image of [STARTER_IMAGE, NODE_IMAGE]) {
    const present = await docker.getImage(image).inspect().then(() => true, () => false);
    if (!present) return `the image ${image} is not built (run npm run images)`;
  }
  return undefined;
}

/** Starter create -> running, and a bare `docker run` to node-connects-back, taking turns. */
async function starterVsBaseline(den: Den, docker: Dockerode, runs: number, created: Set<string>, say: (line: string) => void) {
  say(`docker: create -> ready, ${runs} runs of the starter template (cached image), interleaved with bare docker run`);
  // One unmeasured round each: the agent bundle, the relay and the page cache warm up.
  await createDeleteTimed(den, 'dk-warm', 'starter', created);
  const listener = await baselineListener(docker);
  try {
    await baselineRun(listener);
    const den_ms: number[] = [];
    const bare_ms: number[] = [];
    for (let i = 0; i < runs; i++) {
      den_ms.push((await createDeleteTimed(den, `dk-seq-${i}`, 'starter', created)).ms);
      bare_ms.push(await baselineRun(listener));
    }
    say(`  den: median ${round(median(den_ms))} ms; bare docker run: median ${round(median(bare_ms))} ms`);
    return {
      docker_create_ready_median_ms: round(median(den_ms)),
      docker_create_ready_range_ms: [round(Math.min(...den_ms)), round(Math.max(...den_ms))],
      docker_run_baseline_ms: round(median(bare_ms)),
      docker_run_baseline_range_ms: [round(Math.min(...bare_ms)), round(Math.max(...bare_ms))],
      docker_overhead_ms: round(median(den_ms) - median(bare_ms)),
    };
  } finally {
    await listener.close();
  }
}

/** templates/node-api: create -> running, and the share spent waiting for service readiness. */
async function environment(den: Den, runs: number, created: Set<string>, say: (line: string) => void) {
  say(`docker: create -> ready, ${runs} runs of templates/node-api (two services with readiness checks)`);
  const totals: number[] = [];
  const waits: number[] = [];
  for (let i = 0; i < runs; i++) {
    const { ms, readinessMs } = await createDeleteTimed(den, `dk-env-${i}`, 'node-api', created);
    totals.push(ms);
    waits.push(readinessMs);
  }
  const share = waits.reduce((a, b) => a + b, 0) / totals.reduce((a, b) => a + b, 0);
  say(`  median ${round(median(totals))} ms, ${Math.round(share * 100)}% of it waiting for readiness`);
  return {
    docker_env_create_ready_median_ms: round(median(totals)),
    docker_env_readiness_wait_median_ms: round(median(waits)),
    docker_env_readiness_share: Math.round(share * 1000) / 1000,
  };
}

/**
 * templates/node-api once created: an unchanged re-up (`den update` to the version it runs) timed
 * against the create -> ready of the same workspace, counting services started and tasks run by
 * the re-ups (both should be 0); then its `smoke` test run with --force against its cached answer.
 */
async function environmentLoop(den: Den, runs: number, created: Set<string>, say: (line: string) => void) {
  say(`docker: ${runs} unchanged re-ups of templates/node-api against its create, and den test uncached vs cached`);
  const name = 'dk-loop';
  const path = `/api/v1/workspaces/${den.owner}/${name}`;
  const createMs = await createAndWait(den, name, 'node-api', created);
  // the create's own environment step: hashing the seed task's input in the workspace, and running it
  const { steps } = (await api(den, 'GET', `${path}/builds/1`)) as { steps: { name: string; durationMs?: number }[] };
  const createEnvironmentMs = steps.find((step) => step.name === 'environment')?.durationMs ?? NaN;
  const taskRuns = async () => ((await api(den, 'GET', `${path}/env/runs?kind=task`)) as { runs: unknown[] }).runs.length;
  const tasksBefore = await taskRuns();
  const reUps: number[] = [];
  let servicesStarted = 0;
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    const { build } = (await api(den, 'POST', `${path}/update`, {})) as { build: { number: number } };
    await waitFor(async () => {
      const { state } = (await api(den, 'GET', `${path}/builds/${build.number}`)) as { state: string };
      if (state === 'failed' || state === 'canceled') throw new Error(`re-up build ${build.number} ${state}: ${await lastLogLines(den, name)}`);
      return state === 'succeeded';
    }, READY_TIMEOUT_MS, `re-up build ${build.number}`, 10);
    reUps.push(performance.now() - started);
    servicesStarted += (await buildLog(den, name, build.number)).filter((line) => /^Started service /.test(line.line)).length;
  }
  const tasksRun = (await taskRuns()) - tasksBefore;
  const uncached: number[] = [];
  const cached: number[] = [];
  for (let i = 0; i < runs; i++) {
    uncached.push(await timedTestRun(den, `${path}/env/tests/smoke/run?force=1`, false));
    cached.push(await timedTestRun(den, `${path}/env/tests/smoke/run`, true));
  }
  await deleteAndWait(den, name);
  say(`  create -> ready ${round(createMs)} ms (${round(createEnvironmentMs)} ms of it in the environment step, the seed task); unchanged re-up: median ${round(median(reUps))} ms, ${servicesStarted} services started, ${tasksRun} task runs`);
  say(`  den test smoke: run ${round(median(uncached))} ms, cached answer ${round(median(cached))} ms (medians)`);
  return {
    docker_env_reup_median_ms: round(median(reUps)),
    docker_env_reup_range_ms: [round(Math.min(...reUps)), round(Math.max(...reUps))],
    docker_env_reup_reference_create_ms: round(createMs),
    docker_env_create_environment_step_ms: round(createEnvironmentMs),
    docker_env_reup_services_started: servicesStarted,
    docker_env_reup_task_runs: tasksRun,
    docker_env_test_run_median_ms: round(median(uncached)),
    docker_env_test_cached_median_ms: round(median(cached)),
  };
}

/** POSTs a test run and reads its NDJSON answer to the result line; checks it was (or was not) cached. */
async function timedTestRun(den: Den, path: string, expectCached: boolean): Promise<number> {
  const started = performance.now();
  const response = await fetch(`${den.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${den.token}`, 'content-type': 'application/json' }, body: '{}' });
  const lines = (await response.text()).split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line) as { type?: string; cached?: boolean; run?: { state: string } });
  const ms = performance.now() - started;
  const result = lines.find((line) => line.type === 'result');
  if (!response.ok || result?.run?.state !== 'passed' || result.cached !== expectCached) throw new Error(`den test smoke: ${response.status} ${JSON.stringify(lines.slice(-3))}`);
  return ms;
}

async function concurrentCreates(den: Den, count: number, created: Set<string>, say: (line: string) => void) {
  say(`docker: ${count} concurrent creates of the starter template`);
  const started = performance.now();
  const outcomes = await Promise.allSettled(Array.from({ length: count }, (_, i) => createAndWait(den, `dk-par-${i}`, 'starter', created)));
  const wall = performance.now() - started;
  const failures = outcomes.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
  if (failures.length) say(`  failures: ${failures.slice(0, 3).join(' | ')}`);
  say(`  ${count - failures.length}/${count} running after ${round(wall)} ms; deleting them all`);
  const deleteStarted = performance.now();
  await Promise.all(Array.from({ length: count }, (_, i) => deleteAndWait(den, `dk-par-${i}`).catch((error: Error) => say(`  delete: ${error.message}`))));
  return {
    docker_concurrent_creates_ok: count - failures.length,
    docker_concurrent_creates_of: count,
    docker_concurrent_wall_ms: round(wall),
    docker_concurrent_delete_ms: round(performance.now() - deleteStarted),
  };
}

/**
 * From `docker kill --signal KILL` of a workspace container to the API showing the workspace
 * down: the engine's event stream, the driver's event, the reconciler's write.
 */
async function reconcileDetection(den: Den, docker: Dockerode, runs: number, created: Set<string>, say: (line: string) => void) {
  say(`docker: reconcile detection, kill -9 of the workspace container until the API shows it down, ${runs} runs`);
  const detections: number[] = [];
  for (let i = 0; i < runs; i++) {
    const name = `dk-kill-${i}`;
    await createAndWait(den, name, 'starter', created);
    const { id } = (await api(den, 'GET', `/api/v1/workspaces/${den.owner}/${name}`)) as { id: string };
    const [container] = await docker.listContainers({ filters: { label: [`${LABEL_WORKSPACE}=${id}`, 'den.kind=workspace'] } });
    const killed = performance.now();
    await docker.getContainer(container.Id).kill({ signal: 'SIGKILL' });
    await waitFor(async () => ((await api(den, 'GET', `/api/v1/workspaces/${den.owner}/${name}`)) as { health: { state: string } | null }).health?.state === 'down',
      READY_TIMEOUT_MS, `${name} shown down`, 10);
    detections.push(performance.now() - killed);
    await deleteAndWait(den, name);
  }
  say(`  median ${round(median(detections))} ms`);
  return {
    docker_reconcile_detection_median_ms: round(median(detections)),
    docker_reconcile_detection_range_ms: [round(Math.min(...detections)), round(Math.max(...detections))],
  };
}

/** Create -> running (timed), then delete (not timed) so the next run starts on a quiet engine. */
async function createDeleteTimed(den: Den, name: string, template: string, created: Set<string>): Promise<{ ms: number; readinessMs: number }> {
  const ms = await createAndWait(den, name, template, created);
  const readinessMs = await readinessWait(den, name);
  await deleteAndWait(den, name);
  return { ms, readinessMs };
}

async function createAndWait(den: Den, name: string, template: string, created: Set<string>): Promise<number> {
  const started = performance.now();
  const answer = (await api(den, 'POST', '/api/v1/workspaces', { name, template })) as { workspace: { id: string } };
  created.add(answer.workspace.id);
  await waitFor(async () => {
    const ws = (await api(den, 'GET', `/api/v1/workspaces/${den.owner}/${name}`)) as { status: string };
    if (ws.status === 'failed') throw new Error(`workspace ${name} failed to start: ${await lastLogLines(den, name)}`);
    return ws.status === 'running';
  }, READY_TIMEOUT_MS, `${name} running`, 10);
  return performance.now() - started;
}

/** Time between each "Started service X" and "Service X is ready" line of the first build. */
async function readinessWait(den: Den, name: string): Promise<number> {
  const lines = await buildLog(den, name);
  const started = new Map<string, number>();
  let total = 0;
  for (const line of lines) {
    const start = /^Started service (\S+) /.exec(line.line);
    if (start) started.set(start[1], Date.parse(line.ts));
    const ready = /^Service (\S+) is ready\.$/.exec(line.line);
    if (ready && started.has(ready[1])) total += Date.parse(line.ts) - started.get(ready[1])!;
  }
  return total;
}

async function deleteAndWait(den: Den, name: string): Promise<void> {
  await api(den, 'DELETE', `/api/v1/workspaces/${den.owner}/${name}`);
  await waitFor(async () => {
    const response = await fetch(`${den.url}/api/v1/workspaces/${den.owner}/${name}`, { headers: { authorization: `Bearer ${den.token}` } });
    await response.body?.cancel();
    return response.status === 404;
  }, READY_TIMEOUT_MS, `${name} deleted`, 50);
}

async function buildLog(den: Den, name: string, number = 1): Promise<{ ts: string; line: string }[]> {
  const response = await fetch(`${den.url}/api/v1/workspaces/${den.owner}/${name}/builds/${number}/logs`, { headers: { authorization: `Bearer ${den.token}` } });
  return (await response.text()).split('\n').filter(Boolean).map((line) => JSON.parse(line) as { ts: string; line: string });
}

async function lastLogLines(den: Den, name: string): Promise<string> {
  return (await buildLog(den, name).catch(() => [])).slice(-5).map((l) => l.line).join(' | ');
}

interface BaselineListener {
  host: string;
  port: number;
  /** resolves at the next connection whose first bytes are `token` */
  next(token: string): Promise<void>;
  close(): Promise<void>;
}

/**
 * The bare run's ready point: node in the container connects to the host, as den's agent does.
 * The listener binds the default bridge's gateway address only (dockerd runs --iptables=false:
 * containers reach the host's bridge addresses and nothing beyond).
 */
async function baselineListener(docker: Dockerode): Promise<BaselineListener> {
  const bridge = await docker.getNetwork('bridge').inspect() as { IPAM?: { Config?: { Gateway?: string }[] } };
  const host = bridge.IPAM?.Config?.find((c) => c.Gateway)?.Gateway ?? '172.17.0.1';
  const waiting = new Map<string, () => void>();
  const server: Server = createServer((socket) => {
    socket.once('data', (chunk) => {
      waiting.get(chunk.toString().trim())?.();
      socket.destroy();
    });
  });
  await new Promise<void>((ok, fail) => server.once('error', fail).listen(0, host, ok));
  return {
    host,
    port: (server.address() as { port: number }).port,
    next: (token) => new Promise((ok) => waiting.set(token, ok)),
    close: () => new Promise((ok) => server.close(() => ok())),
  };
}

/** `docker run --rm -d` of the starter's image until node in it has connected back. */
async function baselineRun(listener: BaselineListener): Promise<number> {
  const token = `bare-${Math.random().toString(36).slice(2)}`;
  const arrived = listener.next(token);
  const started = performance.now();
  const script = `require('net').connect(${listener.port}, ${JSON.stringify(listener.host)}).end(${JSON.stringify(token)})`;
  const id = (await run('docker', ['run', '--rm', '-d', '--label', 'den.bench=baseline', STARTER_IMAGE, 'node', '-e', script])).trim();
  await Promise.race([arrived, new Promise((_, fail) => setTimeout(() => fail(new Error('the bare container never connected back')), READY_TIMEOUT_MS))]);
  const ms = performance.now() - started;
  await run('docker', ['rm', '-f', id]).catch(() => '');
  return ms;
}

async function leakedObjects(docker: Dockerode, ids: Set<string>): Promise<number> {
  const filters = JSON.stringify({ label: ['den.managed=true'] });
  const [containers, networks, volumes] = await Promise.all([
    docker.listContainers({ all: true, filters }),
    docker.listNetworks({ filters }),
    docker.listVolumes({ filters }),
  ]);
  const ours = (labels: Record<string, string> | null | undefined) => ids.has(labels?.[LABEL_WORKSPACE] ?? '');
  return containers.filter((c) => ours(c.Labels)).length
    + networks.filter((n) => ours(n.Labels)).length
    + (volumes.Volumes ?? []).filter((v) => ours(v.Labels)).length;
}

async function startDen(): Promise<Den> {
  const dataDir = mkdtempSync(join(tmpdir(), 'den-bench-docker-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(process.execPath, [denBin, 'server', '--runtime', 'docker', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--log-level', 'warn'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => null))?.ok === true, 60_000, 'den server (docker runtime) ready');
  const setup = (await api({ url, token: '' }, 'POST', '/api/v1/setup/first-user', {
    username: 'bench', password: 'bench-password-1', token: { name: 'bench' },
  })) as { token: { token: string } };
  return { url, token: setup.token.token, owner: 'bench', child, dataDir };
}

/** Deletes whatever workspaces are left (after a failure), then stops the server. */
async function stopDen(den: Den, say: (line: string) => void): Promise<void> {
  const list = (await api(den, 'GET', '/api/v1/workspaces?limit=500').catch(() => ({ workspaces: [] }))) as { workspaces: { name: string }[] };
  await Promise.all(list.workspaces.map((w) => deleteAndWait(den, w.name).catch((error: Error) => say(`  cleanup: ${error.message}`))));
  den.child.kill('SIGTERM');
  await new Promise((ok) => den.child.once('exit', ok));
  rmSync(den.dataDir, { recursive: true, force: true });
}

async function pushTemplate(den: Den, name: string): Promise<void> {
  const dir = join(root, 'templates', name);
  const files: Record<string, string> = {};
  for (const file of readdirSync(dir)) files[file] = readFileSync(join(dir, file), 'utf8');
  await api(den, 'POST', '/api/v1/templates', { files, activate: true });
}

async function api(den: Pick<Den, 'url' | 'token'>, method: string, path: string, body?: unknown): Promise<unknown> {
  const response = await fetch(`${den.url}${path}`, {
    method,
    headers: {
      ...(den.token ? { authorization: `Bearer ${den.token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

function run(command: string, args: string[]): Promise<string> {
  return new Promise((ok, fail) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.once('error', fail);
    child.once('exit', (code) => (code === 0 ? ok(stdout) : fail(new Error(`${command} ${args[0]} exited ${code}: ${stderr.trim()}`))));
  });
}

if (import.meta.main) {
  console.log(JSON.stringify({ date: new Date().toISOString(), ...(await dockerBenchmark({ quick: process.argv.includes('--quick') })) }));
}
