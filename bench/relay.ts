// Echo latency through the replica relay, called by bench/foundation.ts and runnable alone
// (`node bench/relay.ts`). Two real `den server` processes on one PostgreSQL database and one
// data dir: B builds the workspace and holds its agent; A reaches it through the relay. One
// exec session (`cat`) and one terminal (`cat` on a pty: the line discipline echoes each key) are
// open through each replica, and samples take turns between them, so the same-replica path is the
// reference measured side by side with the relayed one. Needs PostgreSQL (replicas share it);
// without it prints a [skip] line and reports nulls.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { openExec } from '../client/exec.ts';
import { openTerminal, type TerminalConnection } from '../client/terminal.ts';
import { createTestDatabase, postgresUrl } from '../test/support/postgres.ts';
import { freePort, median, waitFor } from './support.ts';

const root = resolve(import.meta.dirname, '..');
const SAMPLES = Number(process.env.BENCH_RELAY_SAMPLES ?? 2000);
/** samples taken on one path before switching to the other */
const TURN = 50;
const WARMUP = 200;
const READY_TIMEOUT_MS = 60_000;
const OWNER = 'bench';

type Say = (line: string) => void;

export async function relayBenchmark(options: { say: Say }): Promise<Record<string, unknown>> {
  const { say } = options;
  if (!postgresUrl) {
    say('[skip] relay benchmark: DEN_TEST_POSTGRES_URL is not set (bash test/services/postgres.sh prints one).');
    return { exec_echo_same_p50_ms: null, exec_echo_relay_p50_ms: null, terminal_echo_same_p50_ms: null, terminal_echo_relay_p50_ms: null, relay_added_p50_ms: null };
  }
  const database = await createTestDatabase();
  const dataDir = mkdtempSync(join(tmpdir(), 'den-bench-relay-'));
  const started: ChildProcess[] = [];
  const closers: (() => void)[] = [];
  try {
    const b = await startReplica(dataDir, database.url, started);
    const token = await firstUserToken(b.url);
    await post(b.url, token, '/api/v1/templates', { files: { 'template.yaml': 'name: echo\nworkspace:\n  image: den/base\n' }, activate: true });
    await post(b.url, token, '/api/v1/workspaces', { name: 'echo', template: 'echo' });
    await waitFor(async () => (await get(b.url, token, `/api/v1/workspaces/${OWNER}/echo`)).status === 'running', READY_TIMEOUT_MS, 'the workspace running');
    // A starts once B holds the agent (B built it), so A has nothing of its own
    const a = await startReplica(dataDir, database.url, started);

    say(`relay: echo of one byte, ${SAMPLES} samples per path, through B (holds the agent) and through A (relayed to B)`);
    const paths = { same: b.url, relay: a.url };
    const exec = { same: await echoExec(paths.same, token, closers), relay: await echoExec(paths.relay, token, closers) };
    const terminal = { same: await echoTerminal(paths.same, token, closers), relay: await echoTerminal(paths.relay, token, closers) };
    const execTimes = await alternate(exec);
    const terminalTimes = await alternate(terminal);
    const results: Record<string, unknown> = { relay_samples: SAMPLES };
    for (const [kind, times] of [['exec', execTimes], ['terminal', terminalTimes]] as const) {
      for (const path of ['same', 'relay'] as const) {
        results[`${kind}_echo_${path}_p50_ms`] = ms(percentile(times[path], 0.5));
        results[`${kind}_echo_${path}_p99_ms`] = ms(percentile(times[path], 0.99));
      }
      results[`${kind}_relay_added_p50_ms`] = ms(percentile(times.relay, 0.5) - percentile(times.same, 0.5));
      say(`  ${kind}: same replica p50 ${results[`${kind}_echo_same_p50_ms`]} ms p99 ${results[`${kind}_echo_same_p99_ms`]} ms; ` +
        `across replicas p50 ${results[`${kind}_echo_relay_p50_ms`]} ms p99 ${results[`${kind}_echo_relay_p99_ms`]} ms; relay adds ${results[`${kind}_relay_added_p50_ms`]} ms at p50`);
    }
    results.relay_added_p50_ms = Math.max(results.exec_relay_added_p50_ms as number, results.terminal_relay_added_p50_ms as number);
    return results;
  } finally {
    for (const close of closers) close();
    for (const child of started) child.kill('SIGKILL');
    // the workspace's processes live in the data dir's process groups: end them with it
    await stopWorkspaceProcesses(dataDir);
    rmSync(dataDir, { recursive: true, force: true });
    await database.drop();
  }
}

type Echo = () => Promise<number>;

/** Samples both paths in turns of TURN, after a warm-up of each; returns milliseconds per path. */
async function alternate(echo: { same: Echo; relay: Echo }): Promise<{ same: number[]; relay: number[] }> {
  for (let i = 0; i < WARMUP; i++) {
    await echo.same();
    await echo.relay();
  }
  const times = { same: [] as number[], relay: [] as number[] };
  for (let taken = 0; taken < SAMPLES; taken += TURN) {
    for (const path of ['same', 'relay'] as const) {
      for (let i = 0; i < TURN; i++) times[path].push(await echo[path]());
    }
  }
  return times;
}

/** An exec session running `cat`: one byte in, the same byte out. */
async function echoExec(baseUrl: string, token: string, closers: (() => void)[]): Promise<Echo> {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const abort = new AbortController();
  closers.push(() => abort.abort());
  void openExec({ baseUrl, token, owner: OWNER, workspace: 'echo', command: ['cat'], stdin, stdout, stderr: new PassThrough(), signal: abort.signal }).catch(() => undefined);
  const echo: Echo = () => new Promise((resolveEcho) => {
    const sent = performance.now();
    stdout.once('data', () => resolveEcho(performance.now() - sent));
    stdin.write('x');
  });
  // the first echo waits for the session to open
  await echo();
  return echo;
}

/** A terminal running `cat` on a pty: each key is echoed by the line discipline. */
async function echoTerminal(baseUrl: string, token: string, closers: (() => void)[]): Promise<Echo> {
  let waiting: (() => void) | undefined;
  const connection: TerminalConnection = await openTerminal({
    baseUrl, token, owner: OWNER, workspace: 'echo', cols: 80, rows: 24, command: ['cat'],
    onOutput: (_data, consumed) => {
      consumed();
      waiting?.();
    },
  });
  closers.push(() => connection.closeSession());
  return () => new Promise((resolveEcho) => {
    const sent = performance.now();
    waiting = () => {
      waiting = undefined;
      resolveEcho(performance.now() - sent);
    };
    connection.input('x');
  });
}

async function startReplica(dataDir: string, databaseUrl: string, started: ChildProcess[]): Promise<{ url: string }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(process.execPath, [join(root, 'bin/den.js'), 'server', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--database-url', databaseUrl, '--log-level', 'warn'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  started.push(child);
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => null))?.ok === true, 30_000, 'den replica ready');
  return { url };
}

async function stopWorkspaceProcesses(dataDir: string): Promise<void> {
  const { readdirSync, readFileSync } = await import('node:fs');
  let ids: string[] = [];
  try {
    ids = readdirSync(join(dataDir, 'workspaces'));
  } catch {
    return;
  }
  for (const id of ids) {
    try {
      const state = JSON.parse(readFileSync(join(dataDir, 'workspaces', id, 'state.json'), 'utf8')) as { agent?: { pid: number }; services?: Record<string, { pid: number }> };
      for (const tracked of [state.agent, ...Object.values(state.services ?? {})]) if (tracked) process.kill(-tracked.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

async function firstUserToken(url: string): Promise<string> {
  const answer = await post(url, undefined, '/api/v1/setup/first-user', { username: OWNER, password: 'bench-password-1', token: { name: 'bench' } });
  return (answer as { token: { token: string } }).token.token;
}

async function post(url: string, token: string | undefined, path: string, body: unknown): Promise<unknown> {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`POST ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

async function get(url: string, token: string, path: string): Promise<{ status: string }> {
  const response = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  if (!response.ok) throw new Error(`GET ${path}: ${response.status} ${await response.text()}`);
  return (await response.json()) as { status: string };
}

function percentile(values: number[], p: number): number {
  if (p === 0.5) return median(values);
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/** milliseconds with three decimals: the relay's share is a fraction of a millisecond */
function ms(value: number): number {
  return Math.round(value * 1000) / 1000;
}

if (import.meta.main) {
  const say = (line: string) => process.stderr.write(`${line}\n`);
  console.log(JSON.stringify(await relayBenchmark({ say })));
}
