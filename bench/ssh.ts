// The SSH benchmark (`npm run bench:ssh`): den's SSH gateway against OpenSSH's own sshd on this
// machine, run side by side in the same process and the same minute, with the real OpenSSH client:
//  - connect-to-exit of `ssh WS true`: through den's SSH port, through `den ssh --stdio` (the
//    ProxyCommand over the HTTP port), and sshd (median of --runs);
//  - `cat` of a 100 MB file (first byte to last, MB/s; median of 3), and den's CPU per MB in it;
//  - keystroke echo in a pty (p50/p99 of --echoes keystrokes, --rounds times interleaved; the
//    measuring client is bench/ssh-echo.ts in its own process);
//  - --concurrent sessions on one workspace at once: all must complete; the server's RSS before and at the peak.
// den runs in this process (the test harness's server over SQLite, a real agent process with the
// bench's temp dir as HOME), so RSS is den's plus the bench's few kilobytes of bookkeeping.
// Progress goes to stderr; the last stdout line is one JSON object.
//
// --floor adds echo and cat columns for bench/ssh-floor.ts (an ssh2 server writing the pty, or
// streaming `cat`'s pipe, itself: the floor of one Node process on the way; and relaying to a
// second Node process: two), with their CPU per keystroke and per MB; --profile DIR writes CPU
// profiles of the echo phase, or of the cat phase with `--only cat` (this process's, the agent's).
//
//   node bench/ssh.ts [--runs 20] [--mb 100] [--echoes 200] [--rounds 1] [--concurrent 200] [--only echo|cat] [--floor] [--profile DIR]
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { cpus, loadavg, tmpdir, userInfo } from 'node:os';
import { join, resolve } from 'node:path';
import { createApiToken } from '../server/auth/api-tokens.ts';
import { systemClock } from '../server/store/time.ts';
import { addSshKey } from '../server/users/ssh-keys.ts';
import { startTestServer } from '../test/support/harness.ts';
import { idleDriver } from '../test/support/idle-driver.ts';
import { generateKey, isolatedOptions, run } from '../test/support/openssh.ts';
import { startRealAgent } from '../test/support/real-agent.ts';
import { seedWorkspace } from '../test/support/workspace-seed.ts';
import { cpuMs, numberOption, perUnit, processCpuMs, startCpuProfile, underCpuProfile } from './support.ts';

const root = resolve(import.meta.dirname, '..');
const say = (line: string) => process.stderr.write(`${line}\n`);
const args = process.argv.slice(2);
const RUNS = numberOption('--runs', 20);
const MEGABYTES = numberOption('--mb', 100);
const ECHOES = numberOption('--echoes', 200);
const CONCURRENT = numberOption('--concurrent', 200);
/** echo rounds, interleaved across the targets (den port, ProxyCommand, sshd, den port, ...) */
const ROUNDS = numberOption('--rounds', 1);
/** `--only echo` or `--only cat`: that measurement alone (no connect or concurrent runs, nor the other one) */
const ONLY = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
/** `--cat-runs N`: `cat` runs per target (interleaved), median reported */
const CAT_RUNS = numberOption('--cat-runs', 3);
/** `--floor`: also the floors of bench/ssh-floor.ts: an ssh2 server that writes the pty itself (one Node hop), and one that relays to a second Node process (two) */
const FLOOR = args.includes('--floor');
/** `--profile DIR`: CPU profiles of the echo phase (the cat phase with `--only cat`), the server's (this process) and the agent's (its whole life), into DIR */
const PROFILE_DIR = args.includes('--profile') ? resolve(args[args.indexOf('--profile') + 1]) : undefined;
const SSHD = '/usr/sbin/sshd';
const cipherIndex = args.indexOf('--cipher');
/** `--cipher NAME`: what `ssh -c` asks for (default: the client's and server's own choice) */
const CIPHER = cipherIndex >= 0 ? ['-c', args[cipherIndex + 1]] : [];

const dir = mkdtempSync(join(tmpdir(), 'den-bench-ssh-'));
const home = join(dir, 'home');
mkdirSync(home);
const big = join(home, 'big.bin');
writeFileSync(big, randomBytes(MEGABYTES * 1_000_000));
const key = generateKey(dir, 'bench');

const server = await startTestServer({ listen: true, ssh: true, startWorkers: false, driver: () => idleDriver, config: { logLevel: 'silent' } });
const db = server.store.db;
const seeded = await seedWorkspace(db, { username: 'bench', workspaceName: 'ws' });
await addSshKey(db, systemClock, seeded.userId, { name: 'bench', publicKey: readFileSync(`${key}.pub`, 'utf8') });
const token = (await createApiToken(db, systemClock, seeded.userId, { name: 'bench' })).token;
const agent = await startAgent();
const sshd = existsSync(SSHD) ? await startSshd() : undefined;
if (!sshd) say(`no ${SSHD}: the reference column stays empty (apt-get install openssh-server)`);
const floors = FLOOR ? [await startFloor('one'), await startFloor('two')] : [];

const cliEnv = { ...process.env, HOME: dir, XDG_CONFIG_HOME: join(dir, 'config'), DEN_URL: server.url!, DEN_TOKEN: token };
// OWNER/WS, as den config-ssh writes it: no /users/me round trip per connect
const proxy = `${process.execPath} ${join(root, 'bin', 'den.js')} ssh --stdio bench/ws`;
interface Target {
  name: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
}
const targets: Target[] = [
  { name: 'den_port', args: [...isolatedOptions(key), '-p', String(server.sshPort), 'ws@127.0.0.1'] },
  { name: 'den_proxycommand', args: [...isolatedOptions(undefined, ['-o', `ProxyCommand=${proxy}`]), 'ws@den.ws'], env: cliEnv },
  ...(sshd ? [{ name: 'sshd', args: [...isolatedOptions(key), '-p', String(sshd.port), `${userInfo().username}@127.0.0.1`] }] : []),
];
const echoTargets: Array<Target & { pids?: number[] }> = [...targets, ...floors.map((floor) => ({ name: floor.name, pids: floor.pids, args: [...isolatedOptions(key), '-p', String(floor.port), 'bench@127.0.0.1'] }))];

const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, cpus: cpus().length, loadavg_start: loadavg(), runs: RUNS, file_mb: MEGABYTES };
try {
  // warm-up: the CLI bundle, the agent's node-pty, sshd's first fork
  for (const target of targets) await sshRun(target, ['true']);

  if (!ONLY) {
    say('connect-to-exit of `ssh WS true`');
    const connect: Record<string, number[]> = Object.fromEntries(targets.map((target) => [target.name, []]));
    for (let i = 0; i < RUNS; i++) {
      for (const target of targets) {
        const started = performance.now();
        const result = await sshRun(target, ['true']);
        if (result.code !== 0) throw new Error(`${target.name}: ssh true exited ${result.code}: ${result.stderr}`);
        connect[target.name].push(performance.now() - started);
      }
    }
    results.connect_ms_median = Object.fromEntries(Object.entries(connect).map(([name, samples]) => [name, round(median(samples))]));
  }

  if (!ONLY || ONLY === 'cat') {
    say(`cat of ${MEGABYTES} MB`);
    const profiler = PROFILE_DIR && ONLY === 'cat' ? await startCpuProfile(PROFILE_DIR) : undefined;
    const throughput: Record<string, number[]> = Object.fromEntries(echoTargets.map((target) => [target.name, []]));
    const cpuPerMb: Record<string, number[]> = {};
    for (let i = 0; i < CAT_RUNS; i++) {
      for (const target of echoTargets) {
        // den: the server (this process) and the agent apart; a floor: its processes together; sshd: not measured (a process per session)
        const denBefore = cpuMs(agent.pid!);
        const floorBefore = target.pids?.map((pid) => processCpuMs(pid) ?? NaN);
        throughput[target.name].push(await catThroughput(target));
        const perMb = target.pids ? floorCpuPerMb(target.pids, floorBefore!) : perUnit(denBefore, cpuMs(agent.pid!), MEGABYTES, 'ms_per_mb');
        if (target.name === 'sshd') continue;
        for (const [name, value] of Object.entries(perMb)) (cpuPerMb[`${target.name}_${name.replace(/^den_/, '')}`] ??= []).push(value);
      }
    }
    results.cat_mb_per_s_median = Object.fromEntries(Object.entries(throughput).map(([name, samples]) => [name, round(median(samples))]));
    if (sshd) results.cat_share_of_sshd = Object.fromEntries(Object.entries(throughput).map(([name, samples]) => [name, round(median(samples) / median(throughput.sshd), 2)]));
    // per MB, whatever the machine's load: the medians over the runs
    results.cat_cpu_ms_per_mb = Object.fromEntries(Object.entries(cpuPerMb).map(([name, samples]) => [name, round(median(samples), 2)]));
    await profiler?.();
  }

  if (!ONLY || ONLY === 'echo') {
    say(`keystroke echo in a pty (${ECHOES} keystrokes, ${ROUNDS} round${ROUNDS === 1 ? '' : 's'})`);
    const profiler = PROFILE_DIR ? await startCpuProfile(PROFILE_DIR) : undefined;
    const echo: Record<string, { p50: number; p99: number; p50_per_round?: number[] }> = {};
    const echoSamples: Record<string, number[]> = Object.fromEntries(echoTargets.map((target) => [target.name, []]));
    const roundP50s: Record<string, number[]> = Object.fromEntries(echoTargets.map((target) => [target.name, []]));
    for (let pass = 0; pass < ROUNDS; pass++) {
      for (const target of echoTargets) {
        const cpuBefore = cpuMs(agent.pid!);
        const floorBefore = target.pids && totalCpuMs(target.pids);
        const samples = await echoLatency(target, ECHOES);
        // a floor's processes, all of them, per keystroke: what den's server + agent compare with
        if (floorBefore !== undefined && pass === 0) results[`${target.name}_cpu_us_per_echo`] = Math.round(((totalCpuMs(target.pids!) - floorBefore) * 1000) / ECHOES);
        echoSamples[target.name].push(...samples);
        roundP50s[target.name].push(round(percentile(samples, 50), 3));
        // per keystroke, session set-up included (a few ms over all of them); the first round only
        if (target.name === 'den_port' && pass === 0) Object.assign(results, perUnit(cpuBefore, cpuMs(agent.pid!), ECHOES / 1000, 'us_per_echo'));
      }
    }
    for (const target of echoTargets) {
      const samples = echoSamples[target.name];
      echo[target.name] = { p50: round(percentile(samples, 50), 3), p99: round(percentile(samples, 99), 3), ...(ROUNDS > 1 ? { p50_per_round: roundP50s[target.name] } : {}) };
    }
    results.echo_ms = echo;
    await profiler?.();
  }

  if (!ONLY) {
    say(`${CONCURRENT} concurrent sessions on one workspace`);
    results.concurrent = await concurrentSessions(targets[0], CONCURRENT);
  }
  results.loadavg_end = loadavg();
} finally {
  sshd?.child.kill('SIGTERM');
  for (const floor of floors) floor.child.kill('SIGTERM');
  // SIGTERM lets a profiled agent write its profile on the way out
  agent.kill(PROFILE_DIR ? 'SIGTERM' : 'SIGKILL');
  if (PROFILE_DIR) await new Promise((r) => agent.once('exit', r));
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}
process.stdout.write(`${JSON.stringify(results)}\n`);

function sshRun(target: Target, command: string[], input?: string) {
  return run('ssh', [...CIPHER, ...target.args, ...command], { env: target.env, input, timeoutMs: 120_000 });
}

/** MB/s from the first byte of `cat FILE` to its last (1 MB = 10^6 bytes), counted by bench/ssh-cat.ts in its own process (this one is den's server). */
async function catThroughput(target: Target): Promise<number> {
  const result = await run(process.execPath, [join(root, 'bench', 'ssh-cat.ts'), ...CIPHER, ...target.args, `cat ${big}`], { env: target.env, timeoutMs: 300_000 });
  const counted = JSON.parse(result.stdout || '{}') as { bytes?: number; ms?: number; code?: number };
  if (result.code !== 0 || counted.code !== 0 || counted.bytes !== MEGABYTES * 1_000_000) throw new Error(`${target.name}: cat got ${counted.bytes} bytes, exit ${counted.code}: ${result.stderr}`);
  return counted.bytes / 1e6 / (counted.ms! / 1000);
}

/**
 * Milliseconds from writing one byte into `ssh -tt WS cat` to reading its echo from the remote
 * pty, measured by bench/ssh-echo.ts in its own process (this one is den's server).
 */
async function echoLatency(target: Target, count: number): Promise<number[]> {
  const result = await run(process.execPath, [join(root, 'bench', 'ssh-echo.ts'), String(count), ...CIPHER, ...target.args], { env: target.env, timeoutMs: 120_000 });
  if (result.code !== 0) throw new Error(`${target.name}: the echo client exited ${result.code}: ${result.stderr}`);
  return (JSON.parse(result.stdout) as { samples: number[] }).samples;
}

async function concurrentSessions(target: Target, count: number) {
  const rssBefore = process.memoryUsage().rss;
  let rssPeak = rssBefore;
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 50);
  const started = performance.now();
  // 200 key exchanges at once on 2 cores take longer than the 10 s ConnectTimeout of the other runs
  const patient = { ...target, args: target.args.map((arg) => (arg === 'ConnectTimeout=10' ? 'ConnectTimeout=120' : arg)) };
  const results = await Promise.all(Array.from({ length: count }, () => sshRun(patient, ['sleep 2; echo done'])));
  clearInterval(sampler);
  const completed = results.filter((result) => result.code === 0 && result.stdout === 'done\n').length;
  if (completed !== count) say(`only ${completed} of ${count} sessions completed; first failure: ${results.find((r) => r.code !== 0)?.stderr}`);
  return { sessions: count, completed, wall_s: round((performance.now() - started) / 1000, 1), server_rss_mb_before: round(rssBefore / 1e6), server_rss_mb_peak: round(rssPeak / 1e6) };
}

/** The real agent; with --profile, under --cpu-prof. */
async function startAgent(): Promise<ChildProcess> {
  const start = () => startRealAgent(server, seeded, home, { env: {} });
  return PROFILE_DIR ? underCpuProfile(PROFILE_DIR, 'agent', start) : start();
}

/** bench/ssh-floor.ts in its own process(es), with its own host key, accepting the bench's key. */
async function startFloor(mode: 'one' | 'two'): Promise<{ name: string; child: ChildProcess; port: number; pids: number[] }> {
  const hostKey = generateKey(dir, `floor-${mode}-host`);
  const child = spawn(process.execPath, [join(root, 'bench', 'ssh-floor.ts'), mode, hostKey, `${key}.pub`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolveLine, reject) => {
    child.stdout!.setEncoding('utf8').once('data', resolveLine);
    child.once('exit', (code) => reject(new Error(`bench/ssh-floor.ts ${mode} exited ${code}`)));
  });
  return { name: mode === 'one' ? 'one_node_hop' : 'two_node_hops', child, ...(JSON.parse(line) as { port: number; pids: number[] }) };
}

/** OpenSSH's sshd on a free loopback port with a temporary config, host key and authorized key (this user). */
async function startSshd(): Promise<{ child: ChildProcess; port: number }> {
  const port = await freePort();
  const sshdDir = join(dir, 'sshd');
  mkdirSync(sshdDir);
  const hostKey = generateKey(sshdDir, 'host');
  writeFileSync(join(sshdDir, 'authorized_keys'), readFileSync(`${key}.pub`));
  const config = join(sshdDir, 'sshd_config');
  writeFileSync(config, [
    `Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${hostKey}`, `AuthorizedKeysFile ${join(sshdDir, 'authorized_keys')}`,
    'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no', `PidFile ${join(sshdDir, 'sshd.pid')}`,
    'PermitRootLogin prohibit-password', 'Subsystem sftp /usr/lib/openssh/sftp-server', '',
  ].join('\n'));
  mkdirSync('/run/sshd', { recursive: true }); // sshd's privilege separation directory
  const child = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr!.on('data', (chunk) => (log += chunk));
  const deadline = Date.now() + 10_000;
  while (!(await canConnect(port))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`sshd did not start: ${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, port };
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const { port } = probe.address() as { port: number };
  await new Promise((r) => probe.close(r));
  return port;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolvePromise) => {
    const attempt = connect(port, '127.0.0.1');
    attempt.once('connect', () => {
      attempt.destroy();
      resolvePromise(true);
    });
    attempt.once('error', () => resolvePromise(false));
  });
}

/** A floor's CPU per MB: its ssh2 process's (what den's server compares with), the relay's (two hops: the agent's), and both. */
function floorCpuPerMb(pids: number[], before: number[]): Record<string, number> {
  const used = pids.map((pid, i) => ((processCpuMs(pid) ?? NaN) - before[i]) / MEGABYTES);
  return { ssh_cpu_ms_per_mb: used[0], ...(used.length > 1 ? { relay_cpu_ms_per_mb: used[1] } : {}), cpu_ms_per_mb: used.reduce((sum, value) => sum + value, 0) };
}

/** CPU time of processes together (a floor's), ms */
function totalCpuMs(pids: number[]): number {
  return pids.reduce((sum, pid) => sum + (processCpuMs(pid) ?? NaN), 0);
}

function median(samples: number[]): number {
  return percentile(samples, 50);
}

function percentile(samples: number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function round(value: number, digits = 1): number {
  return Number(value.toFixed(digits));
}
