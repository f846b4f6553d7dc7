// `npm run bench:login`: how long a legitimate login takes while a bounded password spray runs,
// side by side with the same login on an idle server. A real den server (child process, SQLite,
// real scrypt) trusts 127.0.0.1 as its proxy, so X-Forwarded-For stands in for client addresses
// (documentation ranges; every packet goes to loopback). Prints progress to stderr and one JSON
// object as the last line of stdout. See docs/benchmarks.md for recorded results.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, median, processCpuMs, round, waitFor } from './support.ts';

const root = resolve(import.meta.dirname, '..');
/** unknown usernames per spray */
const SPRAY_ATTEMPTS = Number(process.env.BENCH_SPRAY_ATTEMPTS ?? 300);
/** attempts a second: several times what the password checks can take, so the limits are what answer */
const SPRAY_RATE = 20;
const IDLE_SAMPLES = Number(process.env.BENCH_IDLE_SAMPLES ?? 20);
/** legit logins during a spray never stop before this many, even if the spray ended sooner */
const MIN_SPRAY_SAMPLES = 10;
const READY_TIMEOUT_MS = 30_000;
const PASSWORD = 'bench-password-1';
const LEGIT_ADDRESS = '198.51.100.1';

const say = (line: string) => process.stderr.write(`${line}\n`);

const dataDir = mkdtempSync(join(tmpdir(), 'den-bench-login-'));
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const server = spawn(process.execPath, [join(root, 'bin/den.js'), 'server', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--log-level', 'warn'], {
  env: { ...process.env, DEN_TRUSTED_PROXIES: '127.0.0.1' },
  stdio: ['ignore', 'inherit', 'inherit'],
});
const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version };
try {
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => null))?.ok === true, READY_TIMEOUT_MS, 'den server ready');
  const setup = await post('/api/v1/setup/first-user', { username: 'bench', password: PASSWORD, token: { name: 'bench' } });
  const ownerToken = (await setup.json()).token.token as string;
  const created = await post('/api/v1/users', { username: 'legit', password: PASSWORD }, { authorization: `Bearer ${ownerToken}` });
  if (created.status !== 201) throw new Error(`creating the legit user failed: ${created.status}`);
  // The legit user has signed in from their own address before, as a returning user has.
  await legitLogin(LEGIT_ADDRESS);

  say(`legit login, idle server, ${IDLE_SAMPLES} runs`);
  const idle: number[] = [];
  for (let i = 0; i < IDLE_SAMPLES; i++) idle.push(await legitLogin(LEGIT_ADDRESS));
  results.idle = summary(idle);
  say(`  p50 ${results.idle && (results.idle as Summary).p50_ms} ms, p99 ${(results.idle as Summary).p99_ms} ms`);

  let newAddress = 0;
  // each spray from addresses of its own, so the second does not start from addresses the first got refused
  let firstSprayAddress = 10;
  for (const addresses of [6, 30]) {
    say(`spray: ${SPRAY_ATTEMPTS} unknown usernames from ${addresses} addresses, ${SPRAY_RATE} a second; legit logins meanwhile`);
    const cpuBefore = processCpuMs(server.pid!);
    const spray = runSpray(addresses, firstSprayAddress);
    firstSprayAddress += addresses;
    spray.result.catch(() => undefined);
    const known: number[] = [];
    const fresh: number[] = [];
    const failures: string[] = [];
    while (!spray.done || known.length < MIN_SPRAY_SAMPLES) {
      // alternately from the address they signed in from before, and from one never seen
      known.push(await legitLogin(LEGIT_ADDRESS).catch((error) => (failures.push(String(error)), NaN)));
      fresh.push(await legitLogin(`198.51.100.${10 + (newAddress++ % 200)}`).catch((error) => (failures.push(String(error)), NaN)));
    }
    const outcome = await spray.result;
    const cpuAfter = processCpuMs(server.pid!);
    const key = `spray_${addresses}_addresses`;
    results[key] = {
      legit_known_address: summary(known.filter(Number.isFinite)),
      legit_new_address: summary(fresh.filter(Number.isFinite)),
      legit_failures: failures.length,
      ...outcome,
      server_cpu_ms: cpuBefore === null || cpuAfter === null ? null : Math.round(cpuAfter - cpuBefore),
    };
    const line = results[key] as { legit_known_address: Summary; legit_new_address: Summary };
    say(`  legit, known address: p50 ${line.legit_known_address.p50_ms} ms, p99 ${line.legit_known_address.p99_ms} ms (${known.length} runs)`);
    say(`  legit, new address:   p50 ${line.legit_new_address.p50_ms} ms, p99 ${line.legit_new_address.p99_ms} ms (${fresh.length} runs)`);
    say(`  spray: ${JSON.stringify(outcome)}${failures.length ? `; legit failures: ${failures.slice(0, 3).join(' | ')}` : ''}`);
  }
} finally {
  server.kill('SIGTERM');
  await new Promise((r) => server.once('exit', r));
  rmSync(dataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(results));

// ---------------------------------------------------------------------------------------------

interface Summary {
  runs: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

interface SprayOutcome {
  spray_ms: number;
  /** attempts that got a password check (401) */
  checked: number;
  /** refused before any check: by the address's limit, or because the password checks were busy */
  refused_address: number;
  refused_busy: number;
  /** the median time a refused attempt waited for its 429 */
  refused_median_ms: number;
}

/**
 * Sends SPRAY_ATTEMPTS logins for unknown usernames at SPRAY_RATE a second, round-robin from
 * `addresses` addresses, whatever the answers (an open loop, so a slow server does not slow the
 * spray down). Runs in the background; `done` turns true when every attempt has its answer.
 */
function runSpray(addresses: number, firstOctet: number): { done: boolean; result: Promise<SprayOutcome> } {
  const handle = { done: false, result: undefined as unknown as Promise<SprayOutcome> };
  const started = performance.now();
  const outcome = { checked: 0, refused_address: 0, refused_busy: 0 };
  const refused: number[] = [];
  const attempt = async (i: number) => {
    await sleep(Math.max(0, started + (i * 1000) / SPRAY_RATE - performance.now()));
    const sent = performance.now();
    const address = `203.0.113.${firstOctet + (i % addresses)}`;
    const response = await post('/api/v1/auth/login', { username: `spray-${firstOctet}-${i}`, password: 'not-the-password' }, { 'x-forwarded-for': address });
    const body = await response.json();
    if (response.status === 401) {
      outcome.checked++;
      return;
    }
    if (response.status !== 429) throw new Error(`spray: unexpected ${response.status} ${JSON.stringify(body)}`);
    refused.push(performance.now() - sent);
    if (String(body.error.message).startsWith('Too many failed logins from your address')) outcome.refused_address++;
    else outcome.refused_busy++;
  };
  handle.result = Promise.all(Array.from({ length: SPRAY_ATTEMPTS }, (_, i) => attempt(i))).then(() => {
    handle.done = true;
    return { spray_ms: Math.round(performance.now() - started), ...outcome, refused_median_ms: round(median(refused)) };
  });
  return handle;
}

/** One password login (session cookie) from `address`; its time in ms, or an error unless 200. */
async function legitLogin(address: string): Promise<number> {
  const started = performance.now();
  const response = await post('/api/v1/auth/login', { username: 'legit', password: PASSWORD }, { 'x-forwarded-for': address });
  const body = await response.text();
  const elapsed = performance.now() - started;
  if (response.status !== 200) throw new Error(`legit login from ${address}: ${response.status} ${body}`);
  return elapsed;
}

function post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

function summary(values: number[]): Summary {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => round(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN);
  return { runs: values.length, p50_ms: round(median(values)), p99_ms: at(0.99), max_ms: round(sorted.at(-1) ?? NaN) };
}
