// `npm run bench`: the foundation's performance targets, measured on this machine with
// references run side by side (these 2-core machines are noisy). Prints progress to stderr and
// one JSON object as the last line of stdout. See docs/benchmarks.md for recorded results.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import autocannon from 'autocannon';
import Fastify from 'fastify';
import { openStore } from '../server/store/connect.ts';
import { createTestDatabase, postgresUrl } from '../test/support/postgres.ts';
import { dockerBenchmark } from './docker.ts';
import { eventsBenchmark } from './events.ts';
import { relayBenchmark } from './relay.ts';
import { kubernetesBenchmark } from './kubernetes.ts';
import { freePort, median, processCpuMs, round, waitFor } from './support.ts';

const root = resolve(import.meta.dirname, '..');
const denBin = join(root, 'bin/den.js');
const CREATE_RUNS = Number(process.env.BENCH_CREATE_RUNS ?? 15);
const CONCURRENT_CREATES = 20;
const EXEC_RUNS = Number(process.env.BENCH_EXEC_RUNS ?? 20);
const LIST_WORKSPACES = 1000;
/** kill -9 of one agent per run, each in another of the sequentially created workspaces */
const RECONCILE_RUNS = Math.min(5, CREATE_RUNS);
const READY_TIMEOUT_MS = 60_000;

const say = (line: string) => process.stderr.write(`${line}\n`);

interface Den {
  url: string;
  token: string;
  owner: string;
  process: ChildProcess;
  dataDir: string;
  /** set when the server runs on PostgreSQL */
  databaseUrl?: string;
  stop(): Promise<void>;
}

const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version };

const sqliteDen = await startDen({});
try {
  await pushStarter(sqliteDen);
  results.idle_rss_mb = await idleRssMb(sqliteDen);

  say(`create -> ready, ${CREATE_RUNS} sequential runs (process runtime, starter template)`);
  const createTimes: number[] = [];
  for (let i = 0; i < CREATE_RUNS; i++) {
    createTimes.push(await createAndWait(sqliteDen, `seq-${i}`));
  }
  results.create_ready_median_ms = round(median(createTimes));
  results.create_ready_range_ms = [round(Math.min(...createTimes)), round(Math.max(...createTimes))];
  results.reference_agent_spawn_ms = round(median(await timeRuns(5, () => runCommand(process.execPath, ['-e', '0']))));

  say(`${CONCURRENT_CREATES} concurrent creates`);
  const concurrent = await Promise.allSettled(
    Array.from({ length: CONCURRENT_CREATES }, (_, i) => createAndWait(sqliteDen, `par-${i}`)),
  );
  results.concurrent_creates_ok = concurrent.filter((r) => r.status === 'fulfilled').length;
  results.concurrent_creates_of = CONCURRENT_CREATES;
  const failures = concurrent.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
  if (failures.length) say(`  failures: ${failures.slice(0, 3).join(' | ')}`);

  say(`den exec seq-0 -- true, ${EXEC_RUNS} runs, with bare node start-up as the reference`);
  // As a user runs it: after `den login` (a saved login knows the username, so a bare workspace
  // name needs no /users/me round trip), with the compile cache in a fresh cache dir.
  const cliHome = mkdtempSync(join(tmpdir(), 'den-bench-cli-'));
  const { DEN_URL: _url, DEN_TOKEN: _token, ...cleanEnv } = process.env;
  const env = { ...cleanEnv, XDG_CONFIG_HOME: join(cliHome, 'config'), XDG_CACHE_HOME: join(cliHome, 'cache') };
  await runCommand(process.execPath, [denBin, 'login', sqliteDen.url, '--token', sqliteDen.token], env);
  const execTimes: number[] = [];
  const nodeStart: number[] = [];
  const cliHelp: number[] = [];
  for (let i = 0; i < EXEC_RUNS; i++) {
    execTimes.push(await timeOnce(() => runCommand(process.execPath, [denBin, 'exec', 'seq-0', '--', 'true'], env)));
    nodeStart.push(await timeOnce(() => runCommand(process.execPath, ['-e', '0'])));
    cliHelp.push(await timeOnce(() => runCommand(process.execPath, [denBin, '--version'], env)));
  }
  results.exec_median_ms = round(median(execTimes));
  results.exec_range_ms = [round(Math.min(...execTimes)), round(Math.max(...execTimes))];
  results.node_startup_median_ms = round(median(nodeStart));
  results.cli_startup_median_ms = round(median(cliHelp));
  rmSync(cliHome, { recursive: true, force: true });

  say(`reconcile detection: kill -9 of a workspace's agent until the API shows it down, ${RECONCILE_RUNS} runs`);
  const detections: number[] = [];
  for (let i = 0; i < RECONCILE_RUNS; i++) detections.push(await agentKillDetection(sqliteDen, `seq-${CREATE_RUNS - 1 - i}`));
  results.reconcile_detection_median_ms = round(median(detections));
  results.reconcile_detection_range_ms = [round(Math.min(...detections)), round(Math.max(...detections))];
} finally {
  await sqliteDen.stop();
}

// A fresh server for the list, as for PostgreSQL below: the one above still runs 35 workspaces
// whose agents and services would share the CPU with the list and make the two incomparable.
const listDen = await startDen({});
try {
  await pushStarter(listDen);
  say('list with 1,000 workspaces, SQLite');
  [results.list_p99_ms_sqlite, results.list_server_cpu_ms_per_request_sqlite] = await listBenchmark(listDen);
} finally {
  await listDen.stop();
}

if (postgresUrl) {
  const database = await createTestDatabase();
  const pgDen = await startDen({ DEN_DATABASE_URL: database.url });
  try {
    await pushStarter(pgDen);
    say('list with 1,000 workspaces, PostgreSQL');
    [results.list_p99_ms_postgres, results.list_server_cpu_ms_per_request_postgres] = await listBenchmark(pgDen);
  } finally {
    await pgDen.stop();
    await database.drop();
  }
} else {
  say('[skip] PostgreSQL list benchmark: DEN_TEST_POSTGRES_URL is not set (bash test/services/postgres.sh prints one).');
  results.list_p99_ms_postgres = null;
}

say('reference: a bare Fastify route returning the same JSON from memory');
results.list_reference_p99_ms = await referenceListBenchmark();

Object.assign(results, await eventsBenchmark({ say }));

// exec and terminal echo through the replica that holds the agent and through another one (the relay)
Object.assign(results, await relayBenchmark({ say }));

// The docker runtime, side by side with the process runtime above; prints a [skip] line and
// reports nulls without an engine and den's images. `--quick` runs it with small counts.
Object.assign(results, await dockerBenchmark({ say, quick: process.argv.includes('--quick') }));

// The kubernetes runtime against the test cluster, beside a bare kubectl apply of the same
// objects; a [skip] line and nulls without KUBECONFIG.
Object.assign(results, await kubernetesBenchmark({ say, quick: process.argv.includes('--quick') }));

console.log(JSON.stringify(results));

// ---------------------------------------------------------------------------------------------

async function startDen(extraEnv: Record<string, string>): Promise<Den> {
  const dataDir = mkdtempSync(join(tmpdir(), 'den-bench-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(process.execPath, [denBin, 'server', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--log-level', 'warn'], {
    env: { ...process.env, ...extraEnv },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => null))?.ok === true, 30_000, 'den server ready');
  const setup = (await api(url, undefined, 'POST', '/api/v1/setup/first-user', {
    username: 'bench',
    password: 'bench-password-1',
    token: { name: 'bench' },
  })) as { token: { token: string } };
  const token = setup.token.token;
  return {
    url,
    token,
    owner: 'bench',
    process: child,
    dataDir,
    databaseUrl: extraEnv.DEN_DATABASE_URL,
    async stop() {
      // Delete the workspaces that run processes (seq-*, par-*) so no agent outlives the
      // benchmark; the seeded list-* rows have none and go with the data dir.
      const withProcesses = async () => (await listAll(url, token)).filter((name) => /^(seq|par)-/.test(name));
      const names = await withProcesses().catch(() => [] as string[]);
      await Promise.allSettled(names.map((name) => api(url, token, 'DELETE', `/api/v1/workspaces/bench/${name}`)));
      if (names.length) {
        await waitFor(async () => (await withProcesses()).length === 0, 60_000, 'workspaces deleted')
          .catch((error) => say(`  cleanup: ${error.message}`));
      }
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Every live workspace name, page by page (the API caps a page at 500). */
async function listAll(url: string, token: string): Promise<string[]> {
  const names: string[] = [];
  for (let offset = 0; ; offset += 500) {
    const page = (await api(url, token, 'GET', `/api/v1/workspaces?limit=500&offset=${offset}`)) as { workspaces: { name: string }[]; total: number };
    names.push(...page.workspaces.map((w) => w.name));
    if (page.workspaces.length === 0 || offset + 500 >= page.total) return names;
  }
}

async function pushStarter(den: Den): Promise<void> {
  const { readFileSync, readdirSync } = await import('node:fs');
  const dir = join(root, 'templates/starter');
  const files: Record<string, string> = {};
  for (const name of readdirSync(dir)) files[name] = readFileSync(join(dir, name), 'utf8');
  await api(den.url, den.token, 'POST', '/api/v1/templates', { files, activate: true });
}

/** From the create call to the workspace reporting `running` (agent ready, startup scripts done). */
async function createAndWait(den: Den, name: string): Promise<number> {
  const started = performance.now();
  await api(den.url, den.token, 'POST', '/api/v1/workspaces', { name, template: 'starter', params: { greeting: 'bench' } });
  await waitFor(async () => {
    const ws = (await api(den.url, den.token, 'GET', `/api/v1/workspaces/${den.owner}/${name}`)) as { status: string };
    if (ws.status === 'failed') throw new Error(`workspace ${name} failed to start`);
    return ws.status === 'running';
  }, READY_TIMEOUT_MS, `${name} running`, 10);
  return performance.now() - started;
}

/**
 * From kill -9 of the agent's process group (the pid the process runtime keeps in its state
 * file) to the workspace's health reading down in the API: the runtime's liveness check, the
 * reconcile pass and the store write together.
 */
async function agentKillDetection(den: Den, name: string): Promise<number> {
  const path = `/api/v1/workspaces/${den.owner}/${name}`;
  const { id } = (await api(den.url, den.token, 'GET', path)) as { id: string };
  const state = JSON.parse(readFileSync(join(den.dataDir, 'workspaces', id, 'state.json'), 'utf8')) as { agent: { pid: number } };
  const killed = performance.now();
  process.kill(-state.agent.pid, 'SIGKILL');
  await waitFor(async () => ((await api(den.url, den.token, 'GET', path)) as { health: { state: string } | null }).health?.state === 'down',
    READY_TIMEOUT_MS, `${name} shown down`, 10);
  return performance.now() - killed;
}

/** p99 latency and the den server's CPU time per request (robust on a loaded machine, unlike latency). */
async function listBenchmark(den: Den): Promise<[number, number | null]> {
  // Seed through the store directly: this measures listing, not creating.
  await seedWorkspaces(den);
  const cpuBefore = processCpuMs(den.process.pid!);
  const result = await autocannon({
    url: `${den.url}/api/v1/workspaces?limit=50`,
    connections: 50,
    duration: 10,
    headers: { authorization: `Bearer ${den.token}` },
  });
  if (result.non2xx > 0) throw new Error(`list returned ${result.non2xx} non-2xx responses`);
  const cpuAfter = processCpuMs(den.process.pid!);
  const cpuPerRequest = cpuBefore === null || cpuAfter === null ? null : Math.round(((cpuAfter - cpuBefore) / result.requests.total) * 1000) / 1000;
  say(`  ${Math.round(result.requests.average)} req/s, p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms, server CPU ${cpuPerRequest} ms/request`);
  return [result.latency.p99, cpuPerRequest];
}

async function seedWorkspaces(den: Den): Promise<void> {
  const store = await openStore(den.databaseUrl ? { databaseUrl: den.databaseUrl } : { dataDir: den.dataDir });
  try {
    const owner = await store.db.selectFrom('users').select('id').where('username', '=', den.owner).executeTakeFirstOrThrow();
    const template = await store.db.selectFrom('templates').select(['id', 'active_version_id']).executeTakeFirstOrThrow();
    const now = new Date().toISOString();
    const rows = Array.from({ length: LIST_WORKSPACES }, (_, i) => ({
      id: crypto.randomUUID(),
      name: `list-${i}`,
      owner_id: owner.id,
      template_id: template.id,
      template_version_id: template.active_version_id!,
      params_json: '{}',
      status: 'stopped' as const,
      last_build_id: null,
      created_at: now,
      updated_at: now,
      deleted_at: null,
    }));
    for (let i = 0; i < rows.length; i += 100) {
      await store.db.insertInto('workspaces').values(rows.slice(i, i + 100)).execute();
    }
  } finally {
    await store.close();
  }
}

async function referenceListBenchmark(): Promise<number> {
  const app = Fastify();
  const payload = {
    workspaces: Array.from({ length: 50 }, (_, i) => ({ id: crypto.randomUUID(), name: `list-${i}`, owner: 'bench', status: 'stopped' })),
  };
  app.get('/list', async () => payload);
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as { port: number }).port;
  const result = await autocannon({ url: `http://127.0.0.1:${port}/list`, connections: 50, duration: 10 });
  await app.close();
  say(`  reference: ${Math.round(result.requests.average)} req/s, p99 ${result.latency.p99} ms`);
  return result.latency.p99;
}

async function idleRssMb(den: Den): Promise<number> {
  await new Promise((r) => setTimeout(r, 2000));
  const status = spawnSync('ps', ['-o', 'rss=', '-p', String(den.process.pid)]).stdout.toString().trim();
  return round(Number(status) / 1024);
}

async function api(url: string, token: string | undefined, method: string, path: string, body?: unknown): Promise<unknown> {
  const response = await fetch(`${url}${path}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  const json = text ? JSON.parse(text) : undefined;
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return json;
}

function runCommand(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.once('exit', (code) => (code === 0 ? resolveRun() : reject(new Error(`${args.join(' ')} exited ${code}: ${stderr}`))));
  });
}

async function timeOnce(run: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await run();
  return performance.now() - started;
}

async function timeRuns(n: number, run: () => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await timeOnce(run));
  return out;
}
