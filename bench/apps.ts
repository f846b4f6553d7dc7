// The app proxy benchmark (`npm run bench:apps`): an HTTP app on loopback (a child process) opened
// through den's path-mode proxy (/@bench/ws/ports/PORT/, over the agent's tcp channel) and
// straight at its port, side by side in the same run:
//  - latency of a small response (p50/p99, one connection, --seconds each) and requests/s
//    (--connections connections), both from the autocannon CLI in its own process;
//  - throughput of a --mb MB download (curl in its own process, request to last byte, best of 3),
//    also through one plain Node TCP relay (a child process, socket.pipe both ways) and through
//    two of them in series: the rate any design that carries the bytes through one Node process,
//    or through two (den's agent, then its server), could reach on this machine at this moment;
//  - den's CPU (server and agent) per request and per MB, the relays' CPU per MB (all of them
//    together: one, or two), and the server's time in garbage collection (PerformanceObserver 'gc'
//    entries: wall time of the collector on the main thread).
// den runs in this process (the test harness's server over SQLite, a real agent process).
// Progress goes to stderr; the last stdout line is one JSON object. `--only download` skips the
// latency and requests/s phases; `--profile DIR` writes CPU profiles of the download phase, the
// server's (this process) and the agent's (its whole life), into DIR.
//
//   node bench/apps.ts [--seconds 5] [--connections 10] [--mb 100] [--only download] [--profile DIR]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { PerformanceObserver } from 'node:perf_hooks';
import { join, resolve } from 'node:path';
import { createApiToken } from '../server/auth/api-tokens.ts';
import { systemClock } from '../server/store/time.ts';
import { startTestServer } from '../test/support/harness.ts';
import { idleDriver } from '../test/support/idle-driver.ts';
import { startRealAgent } from '../test/support/real-agent.ts';
import { seedWorkspace } from '../test/support/workspace-seed.ts';
import { cpuMs, freePort, numberOption, perUnit, processCpuMs, round, startCpuProfile, underCpuProfile } from './support.ts';

const root = resolve(import.meta.dirname, '..');
const say = (line: string) => process.stderr.write(`${line}\n`);
const SECONDS = numberOption('--seconds', 5);
const CONNECTIONS = numberOption('--connections', 10);
const MEGABYTES = numberOption('--mb', 100);
const args = process.argv.slice(2);
const ONLY_DOWNLOAD = args.includes('--only') && args[args.indexOf('--only') + 1] === 'download';
const PROFILE_DIR = args.includes('--profile') ? resolve(args[args.indexOf('--profile') + 1]) : undefined;

const APP = `
const http = require('node:http');
const chunk = Buffer.alloc(1024 * 1024, 120);
const total = Number(process.env.BYTES);
http.createServer((req, res) => {
  if (req.url === '/large') {
    res.writeHead(200, { 'content-length': total });
    let sent = 0;
    const more = () => {
      while (sent < total) {
        const part = chunk.subarray(0, Math.min(chunk.length, total - sent));
        sent += part.length;
        if (!res.write(part)) return void res.once('drain', more);
      }
      res.end();
    };
    return more();
  }
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 12 });
  res.end('hello world\\n');
}).listen(Number(process.env.PORT), '127.0.0.1', () => process.stdout.write('ready\\n'));
`;

/** A byte relay: connections to its port are piped both ways to TARGET's port (nothing is parsed). */
const RELAY = `
const net = require('node:net');
const server = net.createServer((client) => {
  const upstream = net.connect(Number(process.env.TARGET), '127.0.0.1');
  client.pipe(upstream).pipe(client);
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
}).listen(0, '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
`;

/** Garbage collection time of this process (den's server) since the last call, in ms. */
const gcTime = (() => {
  let total = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) total += entry.duration;
  }).observe({ entryTypes: ['gc'] });
  let last = 0;
  return () => {
    const since = total - last;
    last = total;
    return since;
  };
})();

const dir = mkdtempSync(join(tmpdir(), 'den-bench-apps-'));
const appPort = await freePort();
const app = spawn(process.execPath, ['-e', APP], { env: { ...process.env, PORT: String(appPort), BYTES: String(MEGABYTES * 1_000_000) }, stdio: ['ignore', 'pipe', 'inherit'] });
await new Promise((resolve) => app.stdout!.once('data', resolve));
const relays: ChildProcess[] = [];
const oneRelayPort = await startRelay(appPort);
const twoRelaysPort = await startRelay(await startRelay(appPort));
const relayPids = { one_relay: relays.slice(0, 1).map((relay) => relay.pid!), two_relays: relays.slice(1).map((relay) => relay.pid!) };

const server = await startTestServer({ listen: true, startWorkers: false, driver: () => idleDriver, config: { logLevel: 'silent' } });
const seeded = await seedWorkspace(server.store.db, { username: 'bench', workspaceName: 'ws' });
const token = (await createApiToken(server.store.db, systemClock, seeded.userId, { name: 'bench' })).token;
let agent!: ChildProcess;
const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, cpus: cpus().length, loadavg_start: loadavg(), seconds: SECONDS, connections: CONNECTIONS, download_mb: MEGABYTES };
try {
  agent = await startAgent();
  const targets = [
    { name: 'direct', base: `http://127.0.0.1:${appPort}`, headers: {} as Record<string, string> },
    { name: 'den', base: `${server.url}/@bench/ws/ports/${appPort}`, headers: { authorization: `Bearer ${token}` } },
  ];
  for (const target of targets) await autocannon(target.base + '/', target.headers, 1, 1); // warm-up

  for (const target of ONLY_DOWNLOAD ? [] : targets) {
    say(`${target.name}: latency, 1 connection, ${SECONDS} s`);
    const latency = await autocannon(target.base + '/', target.headers, 1, SECONDS);
    results[`${target.name}_p50_ms`] = latency.latency.p50;
    results[`${target.name}_p99_ms`] = latency.latency.p99;
    say(`${target.name}: requests/s, ${CONNECTIONS} connections, ${SECONDS} s`);
    const cpuBefore = cpuMs(agent.pid!);
    gcTime();
    const load = await autocannon(target.base + '/', target.headers, CONNECTIONS, SECONDS);
    results[`${target.name}_req_per_s`] = round(load.requests.average);
    results[`${target.name}_errors`] = load.errors + load.non2xx;
    if (target.name === 'den') {
      Object.assign(results, perUnit(cpuBefore, cpuMs(agent.pid!), load.requests.total / 1000, 'us_per_request'));
      results.den_server_gc_us_per_request = round((gcTime() * 1000) / load.requests.total);
    }
  }
  const relayed = [
    { name: 'one_relay' as const, base: `http://127.0.0.1:${oneRelayPort}`, headers: {} },
    { name: 'two_relays' as const, base: `http://127.0.0.1:${twoRelaysPort}`, headers: {} },
  ];
  const relayCpu = (name: string) => (name in relayPids ? relayPids[name as keyof typeof relayPids].reduce((sum, pid) => sum + (processCpuMs(pid) ?? NaN), 0) : 0);
  for (const target of [...targets, ...relayed]) {
    say(`${target.name}: ${MEGABYTES} MB download, best of 3`);
    const rates: number[] = [];
    const profiler = PROFILE_DIR && target.name === 'den' ? await startCpuProfile(PROFILE_DIR) : undefined;
    const cpuBefore = cpuMs(agent.pid!);
    const relayCpuBefore = relayCpu(target.name);
    gcTime();
    for (let i = 0; i < 3; i++) rates.push(await download(target.base + '/large', target.headers));
    results[`${target.name}_download_mb_per_s`] = round(Math.max(...rates));
    // the relays' own CPU per MB: the floor of den's, process for process
    if (target.name in relayPids) results[`${target.name}_cpu_ms_per_mb`] = Math.round((100 * (relayCpu(target.name) - relayCpuBefore)) / (3 * MEGABYTES)) / 100;
    if (target.name === 'den') {
      Object.assign(results, perUnit(cpuBefore, cpuMs(agent.pid!), 3 * MEGABYTES, 'ms_per_mb'));
      results.den_server_gc_ms_per_mb = Math.round((100 * gcTime()) / (3 * MEGABYTES)) / 100;
    }
    await profiler?.();
  }
  const ratio = (rate: unknown) => Math.round((100 * Number(rate)) / Number(results.direct_download_mb_per_s)) / 100;
  if (!ONLY_DOWNLOAD) {
    results.p50_overhead_ms = round(Number(results.den_p50_ms) - Number(results.direct_p50_ms));
    results.req_per_s_ratio = Math.round((100 * Number(results.den_req_per_s)) / Number(results.direct_req_per_s)) / 100;
  }
  results.download_ratio = ratio(results.den_download_mb_per_s);
  results.one_relay_download_ratio = ratio(results.one_relay_download_mb_per_s);
  results.two_relays_download_ratio = ratio(results.two_relays_download_mb_per_s);
  results.loadavg_end = loadavg();
} finally {
  // SIGTERM lets a profiled agent write its profile on the way out
  const agentExited = agent && new Promise((resolve) => agent.once('exit', resolve));
  agent?.kill(PROFILE_DIR ? 'SIGTERM' : 'SIGKILL');
  if (PROFILE_DIR) await agentExited;
  app.kill('SIGKILL');
  for (const relay of relays) relay.kill('SIGKILL');
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(results));

/** A RELAY child in front of `target`; resolves with the port it listens on. */
async function startRelay(target: number): Promise<number> {
  const relay = spawn(process.execPath, ['-e', RELAY], { env: { ...process.env, TARGET: String(target) }, stdio: ['ignore', 'pipe', 'inherit'] });
  relays.push(relay);
  return Number(await new Promise<string>((resolve) => relay.stdout!.once('data', (data: Buffer) => resolve(data.toString()))));
}

/** The real agent; with --profile, under --cpu-prof. */
async function startAgent(): Promise<ChildProcess> {
  const start = () => startRealAgent(server, seeded, dir, {});
  return PROFILE_DIR ? underCpuProfile(PROFILE_DIR, 'agent', start) : start();
}

interface AutocannonResult {
  latency: { p50: number; p99: number };
  requests: { average: number; total: number };
  errors: number;
  non2xx: number;
}

/** autocannon in its own process, so its load generation does not share den's event loop */
async function autocannon(url: string, headers: Record<string, string>, connections: number, seconds: number): Promise<AutocannonResult> {
  const headerArgs = Object.entries(headers).flatMap(([name, value]) => ['-H', `${name}=${value}`]);
  const child = spawn(join(root, 'node_modules', '.bin', 'autocannon'), ['-j', '-c', String(connections), '-d', String(seconds), ...headerArgs, url], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout.on('data', (data) => (out += data));
  await new Promise((resolve) => child.once('close', resolve));
  return JSON.parse(out) as AutocannonResult;
}

/** curl in its own process (like autocannon): a client in this process would share den's event loop and CPU */
async function download(url: string, headers: Record<string, string>): Promise<number> {
  const headerArgs = Object.entries(headers).flatMap(([name, value]) => ['-H', `${name}: ${value}`]);
  const child = spawn('curl', ['-sS', '--fail', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', ...headerArgs, url], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (data) => (out += data));
  const code = await new Promise((resolve) => child.once('close', resolve));
  const [bytes, seconds] = out.trim().split(' ').map(Number);
  if (code !== 0 || bytes !== MEGABYTES * 1_000_000) throw new Error(`${url}: curl exited ${code} after ${bytes} bytes`);
  return bytes / 1_000_000 / seconds;
}
