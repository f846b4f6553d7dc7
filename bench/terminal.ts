// The terminal benchmark (issue 3). Targets, interleaved run by run:
//  - `den`: a real den server (bench/terminal-den.ts): websocket -> server -> agent link -> agent -> node-pty;
//  - `plain`: the reference, bench/terminal-reference.ts (ws + node-pty + headless mirror, one process);
//  - `plain-nomirror`: the reference without mirror (the transport ceiling; not run by default);
//  - `session`: den's agent/terminal code behind one websocket (den minus server and link).
// Then reattach per target, and the fairness run (100 sessions on one workspace, one flooding) on
// den and the reference. idle_session_bytes is measured in this process with agent/terminal code
// (TerminalSession heap + array buffers), as in docs/terminal.md. Progress goes to stderr; the
// last stdout line is one JSON object (den's figures at the top level, every target's in its key).
//
//   node bench/terminal.ts [--runs 10] [--targets plain,session,den] [--mb 100] [--fairness 100]
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { measureCtrlC, measureEcho, measureFairness, measureReattach, measureThroughput, type ConnectOptions } from './terminal-client.ts';
import { BENCH_SHELL, startDenTarget } from './terminal-den.ts';
import { TerminalSession } from '../agent/terminal/session.ts';
import { waitFor } from '../agent/terminal/testing.ts';

const root = resolve(import.meta.dirname, '..');
const say = (line: string) => process.stderr.write(`${line}\n`);
const args = process.argv.slice(2);
const option = (flag: string, fallback: string) => {
  const index = args.indexOf(flag);
  return index >= 0 ? args[index + 1] : fallback;
};
const RUNS = Number(option('--runs', '10'));
const TARGETS: Record<string, string[]> = {
  plain: ['--impl', 'plain'],
  'plain-nomirror': ['--impl', 'plain', '--no-mirror'],
  session: ['--impl', 'session'],
  den: [],
};
const targets = option('--targets', 'plain,session,den').split(',').filter((target) => target in TARGETS);
const MEGABYTES = Number(option('--mb', '100'));
const FAIRNESS_SESSIONS = Number(option('--fairness', '100'));

const dir = mkdtempSync(join(tmpdir(), 'den-bench-term-'));
// den's data dir is inside: its sandboxed workspaces (other users) must be able to pass through
chmodSync(dir, 0o711);
const big = join(dir, `b64-${MEGABYTES}M.txt`);
// 75,000,000 random bytes as 76-char base64 lines: 101,315,790 bytes, the file of shared/research/terminal.md
writeFileSync(big, randomBytes(MEGABYTES * 750_000).toString('base64').replace(/.{76}/g, '$&\n'));
say(`data file ${big}`);

const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, runs: RUNS, file_mb: MEGABYTES, cpus: cpus().length, loadavg_start: loadavg() };
const samples: Record<string, { echo: number[]; echoP99: number[]; tput: number[]; tputRaw: number[]; ctrlc: number[]; discarded: number; backlog: number[] }> = {};

const servers: Record<string, Server> = {};
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    // den's workspace outlives its server: stop() deletes it first
    void Promise.allSettled(Object.values(servers).map((server) => server.stop())).then(() => {
      rmSync(dir, { recursive: true, force: true });
      process.exit(130);
    });
  });
}
try {
  results.idle_session_bytes = await idleSessionBytes(20, false);
  results.idle_session_hibernated_bytes = await idleSessionBytes(20, true);
  results.idle_session_measured = 'in the benchmark process: agent/terminal TerminalSession heap + array buffers, 120x40, 1,100 lines printed, 20 sessions averaged';
  say(`idle session bytes: ${results.idle_session_bytes} (hibernated: ${results.idle_session_hibernated_bytes})`);
  for (const target of targets) {
    servers[target] = target === 'den' ? await startDen() : await startServer(TARGETS[target]);
    samples[target] = { echo: [], echoP99: [], tput: [], tputRaw: [], ctrlc: [], discarded: 0, backlog: [] };
  }
  for (let run = 0; run < RUNS; run++) {
    for (const target of targets) {
      const { url, connect, file } = servers[target];
      const s = samples[target];
      // each measurement starts on an idle machine: a target that is still parsing or tearing
      // down the previous flood would otherwise add its CPU to whoever runs next
      await settle();
      const echo = (await measureEcho(url, 500, connect)).sort((a, b) => a - b);
      s.echo.push(pct(echo, 50));
      s.echoP99.push(pct(echo, 99));
      await settle();
      s.tput.push((await measureThroughput(url, file, true, connect)).mbPerS);
      await settle();
      s.tputRaw.push((await measureThroughput(url, file, false, connect)).mbPerS);
      await settle();
      const ctrlc = await measureCtrlC(url, file, 2_000, connect);
      s.ctrlc.push(ctrlc.ms);
      s.backlog.push(ctrlc.backlogBytes);
      s.discarded += ctrlc.discarded;
      say(`run ${run + 1}/${RUNS} ${target}: echo p50 ${fmt(s.echo.at(-1)!)} p99 ${fmt(s.echoP99.at(-1)!)} ms, tput ${fmt(s.tput.at(-1)!)} MB/s (raw ${fmt(s.tputRaw.at(-1)!)}), ctrl-c ${fmt(ctrlc.ms)} ms, discarded ${ctrlc.discarded}`);
    }
  }
  const fairness: Record<string, number[]> = {};
  for (const target of targets) {
    const { url, connect, file } = servers[target];
    await settle();
    const reattach = await measureReattach(url, file, 1_000, 7, connect);
    if (FAIRNESS_SESSIONS > 1 && (target === 'den' || target === 'plain')) {
      await settle();
      const run = await measureFairness(url, file, FAIRNESS_SESSIONS, 5, connect);
      fairness[target] = run.echo.sort((a, b) => a - b);
      say(`fairness ${target}: ${run.sessions} sessions, one flooding: others' echo p50 ${fmt(pct(fairness[target], 50))} p99 ${fmt(pct(fairness[target], 99))} ms`);
    }
    const s = samples[target];
    results[target] = {
      echo_p50_ms: summary(s.echo),
      echo_p99_ms: summary(s.echoP99),
      throughput_parsing_mb_s: summary(s.tput),
      throughput_raw_mb_s: summary(s.tputRaw),
      ctrlc_ms: summary(s.ctrlc),
      ctrlc_discarded_bytes: s.discarded,
      ctrlc_backlog_bytes: summary(s.backlog),
      reattach_snapshot_ms: summary(reattach.ms),
      reattach_parse_ms: summary(reattach.parseMs),
      reattach_snapshot_bytes: reattach.snapshotBytes,
      ...(fairness[target] ? { fairness_echo_p50_ms: round(pct(fairness[target], 50)), fairness_echo_p99_ms: round(pct(fairness[target], 99)), fairness_sessions: FAIRNESS_SESSIONS } : {}),
      server_peak_rss_mb: servers[target].peakRssMb(),
      server_cpu_s: servers[target].cpuSeconds(),
      ...servers[target].extra(),
    };
    await servers[target].stop();
  }
  const ref = results.plain as Record<string, { median: number }> | undefined;
  if (ref) {
    Object.assign(results, {
      echo_ref_p50_ms: ref.echo_p50_ms.median,
      echo_ref_p99_ms: ref.echo_p99_ms.median,
      throughput_ref_mb_s: ref.throughput_parsing_mb_s.median,
      ctrlc_ref_ms: ref.ctrlc_ms.median,
      reattach_ref_snapshot_ms: ref.reattach_snapshot_ms.median,
      ...(fairness.plain ? { fairness_ref_echo_p99_ms: round(pct(fairness.plain, 99)) } : {}),
    });
  }
  const den = results.den as (Record<string, { median: number; min: number; max: number }> & Record<string, number>) | undefined;
  if (den) {
    Object.assign(results, {
      echo_p50_ms: den.echo_p50_ms.median,
      echo_p99_ms: den.echo_p99_ms.median,
      throughput_mb_s: den.throughput_parsing_mb_s.median,
      throughput_raw_mb_s: den.throughput_raw_mb_s.median,
      ctrlc_ms: den.ctrlc_ms.median,
      ctrlc_discarded_bytes: den.ctrlc_discarded_bytes,
      reattach_snapshot_ms: den.reattach_snapshot_ms.median,
      fairness_echo_p99_ms: den.fairness_echo_p99_ms,
      server_peak_rss_mb: den.server_peak_rss_mb,
      agent_peak_rss_mb: den.agent_peak_rss_mb,
      // ranges over the runs: [min, max]
      echo_p50_range_ms: [den.echo_p50_ms.min, den.echo_p50_ms.max],
      echo_p99_range_ms: [den.echo_p99_ms.min, den.echo_p99_ms.max],
      throughput_range_mb_s: [den.throughput_parsing_mb_s.min, den.throughput_parsing_mb_s.max],
      ctrlc_range_ms: [den.ctrlc_ms.min, den.ctrlc_ms.max],
      reattach_snapshot_range_ms: [den.reattach_snapshot_ms.min, den.reattach_snapshot_ms.max],
    });
    if (ref) {
      Object.assign(results, {
        echo_p50_ratio: round(den.echo_p50_ms.median / ref.echo_p50_ms.median),
        echo_p99_ratio: round(den.echo_p99_ms.median / ref.echo_p99_ms.median),
        throughput_ratio: round(den.throughput_parsing_mb_s.median / ref.throughput_parsing_mb_s.median),
        ctrlc_ratio: round(den.ctrlc_ms.median / ref.ctrlc_ms.median),
        reattach_ratio: round(den.reattach_snapshot_ms.median / ref.reattach_snapshot_ms.median),
      });
    }
  }
  results.loadavg_end = loadavg();
} finally {
  for (const server of Object.values(servers)) await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(results));

/** Waits (up to 5 s) until the machine's CPUs were less than 10 % busy over a 200 ms window. */
async function settle(): Promise<void> {
  const cpuTicks = () => {
    const [, ...ticks] = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/).map(Number);
    const idle = ticks[3] + ticks[4];
    return { idle, total: ticks.reduce((sum, n) => sum + n, 0) };
  };
  const deadline = performance.now() + 5_000;
  while (performance.now() < deadline) {
    const before = cpuTicks();
    await new Promise((resolve) => setTimeout(resolve, 200));
    const after = cpuTicks();
    const total = after.total - before.total;
    if (total > 0 && 1 - (after.idle - before.idle) / total < 0.1) return;
  }
}

interface Server {
  url: string;
  connect: ConnectOptions;
  /** the data file as the target's shell sees it */
  file: string;
  process?: ChildProcess;
  peakRssMb(): number;
  cpuSeconds(): number;
  /** more per-target figures (den: the agent's) */
  extra(): Record<string, number>;
  stop(): Promise<void>;
}

async function startDen(): Promise<Server> {
  const target = await startDenTarget({ dir, dataFile: big, say });
  const agent = () => {
    const pid = target.agentPid();
    if (!pid) throw new Error('The benchmark workspace has no agent process.');
    return pid;
  };
  // the agent exits with the workspace: read its figures before stopping
  let agentFigures: Record<string, number> | undefined;
  let stopping: Promise<void> | undefined;
  const extra = () => (agentFigures ??= { agent_peak_rss_mb: peakRssMb(agent()), agent_cpu_s: cpuSeconds(agent()) });
  return {
    url: target.url,
    connect: { ...BENCH_SHELL, headers: target.headers },
    file: target.file,
    peakRssMb: () => peakRssMb(target.serverPid),
    cpuSeconds: () => cpuSeconds(target.serverPid),
    extra,
    stop: () => {
      extra();
      stopping ??= target.stop();
      return stopping;
    },
  };
}

function peakRssMb(pid: number): number {
  return round(Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024);
}

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

async function startServer(extra: string[]): Promise<Server> {
  const child = spawn(process.execPath, [join(root, 'bench/terminal-reference.ts'), ...extra], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, HOME: dir } });
  const url = await new Promise<string>((resolveUrl, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      const match = /LISTENING (\S+)/.exec(out);
      if (match) resolveUrl(match[1]);
    });
    child.once('exit', (code) => reject(new Error(`reference server exited with ${code}`)));
  });
  return {
    url,
    connect: {},
    file: big,
    process: child,
    peakRssMb: () => peakRssMb(child.pid!),
    cpuSeconds: () => cpuSeconds(child.pid!),
    extra: () => ({}),
    stop: () =>
      new Promise((resolveStop) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolveStop();
        child.once('exit', () => resolveStop());
        child.kill('SIGTERM');
      }),
  };
}

/**
 * Heap + array buffers per idle TerminalSession whose mirror holds 1,000 lines of scrollback at
 * 120x40: with the headless terminal live, or hibernated (what an idle session costs after a minute).
 */
async function idleSessionBytes(count: number, hibernate: boolean): Promise<number> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const used = () => {
    gc();
    gc();
    const memory = process.memoryUsage();
    return memory.heapUsed + memory.arrayBuffers;
  };
  const before = used();
  const sessions: TerminalSession[] = [];
  for (let i = 0; i < count; i++) {
    const session = new TerminalSession({
      command: ['bash', '--norc', '--noprofile'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, PS1: 'den$ ' },
      cols: 120,
      rows: 40,
      hibernateAfterMs: hibernate ? 1 : 0,
    });
    sessions.push(session);
  }
  for (const session of sessions) {
    const start = session.outputBytes;
    writeToSession(session, `head -n 1100 ${big}\r`);
    await waitFor(() => session.outputBytes - start > 1100 * 77 && session.mirrorBacklogBytes === 0, 30_000, 'the session to print 1,100 lines');
  }
  if (hibernate) await waitFor(() => sessions.every((session) => session.hibernating), 30_000, 'every mirror to hibernate');
  else await new Promise((r) => setTimeout(r, 500));
  const after = used();
  for (const session of sessions) session.close();
  return Math.round((after - before) / count);
}

function writeToSession(session: TerminalSession, text: string): void {
  const sink = { attached() {}, output() {}, resized() {}, exit() {}, detached() {} };
  const attachment = session.attach(sink, { cols: 120, rows: 40 });
  attachment.input(text);
  attachment.detach();
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function summary(values: number[]): { median: number; min: number; max: number } {
  const sorted = [...values].sort((a, b) => a - b);
  return { median: round(pct(sorted, 50)), min: round(sorted[0]), max: round(sorted.at(-1)!) };
}

function round(value: number): number {
  return Math.round(value * 1000) / 1000;
}

function fmt(value: number): string {
  return value.toFixed(value < 10 ? 3 : 1);
}
