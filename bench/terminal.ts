// The terminal benchmark (issue 3). Today it measures the references only: bench/terminal-reference.ts
// in its `plain` form (ws + node-pty + headless mirror), `plain --no-mirror` (the transport ceiling)
// and `session` (den's agent/terminal code behind one websocket, no server, no agent link).
// The den target (browser -> server -> agent link -> node-pty) joins the same interleaved loop once
// the link carries terminal channels. Progress goes to stderr; the last stdout line is one JSON object.
//
//   node bench/terminal.ts [--runs 10] [--targets plain,plain-nomirror,session]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { measureCtrlC, measureEcho, measureReattach, measureThroughput } from './terminal-client.ts';
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
};
const targets = option('--targets', 'plain,plain-nomirror,session').split(',').filter((target) => target in TARGETS);
const MEGABYTES = Number(option('--mb', '100'));

const dir = mkdtempSync(join(tmpdir(), 'den-bench-term-'));
const big = join(dir, `b64-${MEGABYTES}M.txt`);
// 75,000,000 random bytes as 76-char base64 lines: 101,315,790 bytes, the file of shared/research/terminal.md
writeFileSync(big, randomBytes(MEGABYTES * 750_000).toString('base64').replace(/.{76}/g, '$&\n'));
say(`data file ${big}`);

const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, runs: RUNS, file_mb: MEGABYTES, cpus: cpus().length, loadavg_start: loadavg() };
const samples: Record<string, { echo: number[]; echoP99: number[]; tput: number[]; tputRaw: number[]; ctrlc: number[]; discarded: number; backlog: number[] }> = {};

const servers: Record<string, Server> = {};
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    for (const server of Object.values(servers)) server.process.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
    process.exit(130);
  });
}
try {
  results.idle_session_bytes = await idleSessionBytes(20, false);
  results.idle_session_hibernated_bytes = await idleSessionBytes(20, true);
  say(`idle session bytes: ${results.idle_session_bytes} (hibernated: ${results.idle_session_hibernated_bytes})`);
  for (const target of targets) {
    servers[target] = await startServer(TARGETS[target]);
    samples[target] = { echo: [], echoP99: [], tput: [], tputRaw: [], ctrlc: [], discarded: 0, backlog: [] };
  }
  for (let run = 0; run < RUNS; run++) {
    for (const target of targets) {
      const url = servers[target].url;
      const s = samples[target];
      const echo = (await measureEcho(url, 500)).sort((a, b) => a - b);
      s.echo.push(pct(echo, 50));
      s.echoP99.push(pct(echo, 99));
      s.tput.push((await measureThroughput(url, big, true)).mbPerS);
      s.tputRaw.push((await measureThroughput(url, big, false)).mbPerS);
      const ctrlc = await measureCtrlC(url, big);
      s.ctrlc.push(ctrlc.ms);
      s.backlog.push(ctrlc.backlogBytes);
      s.discarded += ctrlc.discarded;
      say(`run ${run + 1}/${RUNS} ${target}: echo p50 ${fmt(s.echo.at(-1)!)} p99 ${fmt(s.echoP99.at(-1)!)} ms, tput ${fmt(s.tput.at(-1)!)} MB/s (raw ${fmt(s.tputRaw.at(-1)!)}), ctrl-c ${fmt(ctrlc.ms)} ms, discarded ${ctrlc.discarded}`);
    }
  }
  for (const target of targets) {
    const reattach = await measureReattach(servers[target].url, big, 1_000, 7);
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
      server_peak_rss_mb: servers[target].peakRssMb(),
      server_cpu_s: servers[target].cpuSeconds(),
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
    });
  }
  results.loadavg_end = loadavg();
} finally {
  for (const server of Object.values(servers)) await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
console.log(JSON.stringify(results));

interface Server {
  url: string;
  process: ChildProcess;
  peakRssMb(): number;
  cpuSeconds(): number;
  stop(): Promise<void>;
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
  const status = () => readFileSync(`/proc/${child.pid}/status`, 'utf8');
  return {
    url,
    process: child,
    peakRssMb: () => Number(/VmHWM:\s+(\d+)/.exec(status())![1]) / 1024,
    cpuSeconds: () => {
      const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ');
      return (Number(fields[11]) + Number(fields[12])) / 100;
    },
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
