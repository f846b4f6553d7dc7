import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { collectRelayedGarbageYoung } from '../protocol/heap.ts';

// Small helpers the benchmarks share (bench/foundation.ts, bench/docker.ts, bench/templates.ts, bench/login.ts).

// The benchmarks run den's server in their own process: tune its heap as server/main.ts does, so
// they measure what `den server` runs.
collectRelayedGarbageYoung();

export async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string, intervalMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** A TCP port free on loopback right now. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}

/** NaN for no values, so a skipped measurement shows as null in the JSON. */
export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** One decimal. */
export function round(value: number): number {
  return Math.round(value * 10) / 10;
}

/** USER_HZ, the unit of /proc/PID/stat times: 100 on every Linux den runs on */
const CLOCK_TICKS = 100;

/** User + system CPU time of a process (all its threads) from /proc (Linux); null elsewhere. */
export function processCpuMs(pid: number): number | null {
  const split = processCpuSplitMs(pid);
  return split && split.user + split.system;
}

/** User and system CPU time of a process apart (system: the kernel's work for it, file systems and sockets). */
export function processCpuSplitMs(pid: number): { user: number; system: number } | null {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return { user: (Number(fields[11]) * 1000) / CLOCK_TICKS, system: (Number(fields[12]) * 1000) / CLOCK_TICKS };
  } catch {
    return null;
  }
}

/** A numeric command-line option of a benchmark (`--runs 20`), or its default. */
export function numberOption(flag: string, fallback: number, args = process.argv.slice(2)): number {
  const index = args.indexOf(flag);
  return index >= 0 ? Number(args[index + 1]) : fallback;
}

/**
 * CPU time (user + system, ms) of den's server (this process: the benchmark's clients run in
 * their own) and of the agent process. Unlike rates it hardly depends on what else runs on the
 * machine, so it compares runs made under different loads.
 */
export function cpuMs(agentPid: number): { server: number; agent: number } {
  const { user, system } = process.cpuUsage();
  const fields = readFileSync(`/proc/${agentPid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of proc(5)), in 10 ms ticks
  return { server: (user + system) / 1000, agent: ticks * 10 };
}

/** CPU of the server and the agent between two readings, per unit (a thousand requests, a MB...), to 2 decimals */
export function perUnit(before: { server: number; agent: number }, after: { server: number; agent: number }, units: number, suffix: string): Record<string, number> {
  return {
    [`den_server_cpu_${suffix}`]: Math.round((100 * (after.server - before.server)) / units) / 100,
    [`den_agent_cpu_${suffix}`]: Math.round((100 * (after.agent - before.agent)) / units) / 100,
  };
}

/**
 * One-file edits at a steady rate: writes `source` (a fresh content each time), waits until
 * `seen` (the same file as the service sees it) has that content, every `intervalMs`. Returns the
 * latencies in ms, sorted, with p50/p99/max.
 */
export async function measureEdits(source: string, seen: string, edits: number, intervalMs: number): Promise<{ p50: number; p99: number; max: number; latencies: number[] }> {
  const latencies: number[] = [];
  for (let i = 0; i < edits; i++) {
    const content = `edit ${i} ${randomBytes(8).toString('hex')}\n`;
    const started = performance.now();
    writeFileSync(source, content);
    for (;;) {
      if (readIfExists(seen) === content) break;
      if (performance.now() - started > 10_000) throw new Error(`edit ${i} did not arrive within 10 s`);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    const latency = performance.now() - started;
    latencies.push(latency);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, intervalMs - latency)));
  }
  latencies.sort((a, b) => a - b);
  return {
    p50: round(latencies[Math.floor(latencies.length * 0.5)]),
    p99: round(latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))]),
    max: round(latencies.at(-1)!),
    latencies,
  };
}

function readIfExists(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * The tree the sync benchmarks copy (bench/sync.ts, bench/sync-pair.ts): `files` files of random
 * bytes totalling about `megabytes` MB, in 100 x 7 folders.
 */
export function writeTree(root: string, files: number, megabytes: number): void {
  const perFile = Math.floor((megabytes * 1_000_000) / files);
  const filler = randomBytes(perFile * 2);
  for (let i = 0; i < files; i++) {
    const dir = join(root, `d${i % 100}`, `e${i % 7}`);
    if (i < 700) mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `file${i}.bin`), filler.subarray(i % perFile, (i % perFile) + perFile));
  }
}

/**
 * Runs `start` (which spawns a Node child, e.g. the real agent) under `--cpu-prof`, writing
 * DIR/NAME.cpuprofile when the child exits (SIGTERM lets it write; SIGKILL does not). NODE_OPTIONS
 * is set only while `start` runs, so clients spawned later are not profiled.
 */
export async function underCpuProfile<T>(dir: string, name: string, start: () => Promise<T>): Promise<T> {
  process.env.NODE_OPTIONS = `--cpu-prof --cpu-prof-dir=${dir} --cpu-prof-name=${name}.cpuprofile`;
  try {
    return await start();
  } finally {
    delete process.env.NODE_OPTIONS;
  }
}

/** Starts profiling this process (den's server in a bench); the returned function stops and writes DIR/server.cpuprofile. */
export async function startCpuProfile(dir: string): Promise<() => Promise<void>> {
  const session = new Session();
  session.connect();
  const post = (method: string) => new Promise<unknown>((resolvePost, reject) => session.post(method, (error, result) => (error ? reject(error) : resolvePost(result))));
  await post('Profiler.enable');
  await post('Profiler.start');
  return async () => {
    const { profile } = (await post('Profiler.stop')) as { profile: object };
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'server.cpuprofile'), JSON.stringify(profile));
    session.disconnect();
  };
}
