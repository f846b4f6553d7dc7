// `npm run bench:templates`: what hostile template pushes cost the server. Three clients push
// the same document at once, several times each, while a fourth (bench/healthz-sampler.ts, a
// worker thread) asks /healthz every few ms;
// the reference is /healthz on the same server with no push running. Reports /healthz latency
// (p50 and max) and how far the server's RSS rose above its level before the pushes. Prints
// progress to stderr and one JSON object as the last line of stdout (docs/benchmarks.md).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { MAX_YAML_NODES } from '../server/templates/yaml-bounds.ts';
import { freePort, median, processCpuMs, round, waitFor } from './support.ts';

const root = resolve(import.meta.dirname, '..');
const PUSHERS = 3;
const ROUNDS = Number(process.env.BENCH_TEMPLATE_ROUNDS ?? 5);
const REFERENCE_MS = 3_000;
const HEALTH_INTERVAL_MS = 5;
const RSS_INTERVAL_MS = 10;
const STARTUP_TIMEOUT_MS = 30_000;
/** den's default body limit is 4 MiB (+64 KiB); each push body is just under it, as JSON. */
const BODY_BYTES = 3_800_000;

const say = (line: string) => process.stderr.write(`${line}\n`);
const head = 'name: bench-bomb\nworkspace:\n  image: x\n';

/**
 * Push bodies (the template folder): the shapes the probe used; the largest document the node
 * limit lets through to the parser; and, as the reference for what a body this size costs before
 * any YAML is read, a folder refused for an unsafe file path.
 */
const folders: Record<string, Record<string, string>> = {
  body_only_reference: { 'template.yaml': head, '../blob': 'x'.repeat(BODY_BYTES) },
  nested_block_sequences: { 'template.yaml': `${head}x: ${'- '.repeat(BODY_BYTES / 2)}x\n` },
  // '- 1\n' is five bytes in JSON.
  flat_list: { 'template.yaml': `${head}x:\n${'- 1\n'.repeat(BODY_BYTES / 5)}` },
  // Two nodes per item: one item short of the limit, refused only by the schema after a full parse.
  at_node_limit: { 'template.yaml': `${head}x:\n${'- 1\n'.repeat(MAX_YAML_NODES / 2 - 10)}` },
};

const dataDir = mkdtempSync(join(tmpdir(), 'den-bench-templates-'));
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const server = spawn(process.execPath, [join(root, 'bin/den.js'), 'server', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--log-level', 'warn'], {
  stdio: ['ignore', 'inherit', 'inherit'],
});
const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, rounds: ROUNDS, pushers: PUSHERS };
try {
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => null))?.ok === true, STARTUP_TIMEOUT_MS, 'den server ready');
  const setup = await fetch(`${url}/api/v1/setup/first-user`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'bench', password: 'bench-password-1', token: { name: 'bench' } }),
  });
  const token = ((await setup.json()) as { token: { token: string } }).token.token;

  say(`reference: /healthz every ${HEALTH_INTERVAL_MS} ms for ${REFERENCE_MS} ms, no pushes`);
  const quiet = await sampleHealth(new Promise((r) => setTimeout(r, REFERENCE_MS)));
  results.reference = quiet;
  say(`  p50 ${quiet.healthz_p50_ms} ms, max ${quiet.healthz_max_ms} ms, RSS ${quiet.rss_before_mb} MB`);

  for (const [name, files] of Object.entries(folders)) {
    const body = JSON.stringify({ files });
    say(`${name}: ${PUSHERS} clients push ${Math.round(body.length / 1000)} kB ${ROUNDS} times each`);
    const pushTimes: number[] = [];
    const answers = new Map<string, number>();
    const pushing = Promise.all(Array.from({ length: PUSHERS }, async () => {
      for (let i = 0; i < ROUNDS; i++) {
        const started = performance.now();
        const answer = await push(token, body);
        pushTimes.push(performance.now() - started);
        answers.set(answer, (answers.get(answer) ?? 0) + 1);
      }
    }));
    const cpuBefore = processCpuMs(server.pid!);
    const measured = await sampleHealth(pushing);
    // CPU time rather than wall time: it does not depend on what else runs on the machine. It
    // includes the /healthz requests answered meanwhile (tens of µs each) and every thread.
    const cpuAfter = processCpuMs(server.pid!);
    const cpuPerPush = cpuBefore === null || cpuAfter === null ? null : round((cpuAfter - cpuBefore) / (PUSHERS * ROUNDS));
    results[name] = { ...measured, push_median_ms: round(median(pushTimes)), server_cpu_ms_per_push: cpuPerPush, answers: Object.fromEntries(answers) };
    say(`  /healthz p50 ${measured.healthz_p50_ms} ms, max ${measured.healthz_max_ms} ms; RSS +${measured.rss_growth_mb} MB; push median ${round(median(pushTimes))} ms; server CPU ${cpuPerPush} ms/push; ${[...answers].map(([a, n]) => `${n}x ${a}`).join(', ')}`);
  }
} finally {
  server.kill('SIGTERM');
  await new Promise((r) => server.once('exit', r));
  rmSync(dataDir, { recursive: true, force: true });
}
console.log(JSON.stringify(results));

/** "400 TEMPLATE_YAML_INVALID", or what went wrong on the way. */
async function push(token: string, body: string): Promise<string> {
  try {
    const response = await fetch(`${url}/api/v1/templates`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body });
    return `${response.status} ${((await response.json()) as { error?: { code: string } }).error?.code ?? ''}`.trim();
  } catch (error) {
    return `failed: ${(error as Error).cause ?? (error as Error).message}`;
  }
}

/** /healthz latencies from a worker thread, and the server's RSS, until `until` settles. */
async function sampleHealth(until: Promise<unknown>) {
  const sampler = new Worker(new URL('./healthz-sampler.ts', import.meta.url), { workerData: { url, intervalMs: HEALTH_INTERVAL_MS } });
  const rssBefore = rssMb();
  let rssMax = rssBefore;
  const rssTimer = setInterval(() => { rssMax = Math.max(rssMax, rssMb()); }, RSS_INTERVAL_MS);
  try {
    await until;
  } finally {
    clearInterval(rssTimer);
  }
  rssMax = Math.max(rssMax, rssMb());
  const latencies = new Promise<number[]>((r) => sampler.once('message', r));
  sampler.postMessage('stop');
  const samples = await latencies;
  await sampler.terminate();
  return {
    healthz_samples: samples.length,
    healthz_p50_ms: round(median(samples)),
    healthz_max_ms: round(Math.max(...samples)),
    rss_before_mb: round(rssBefore),
    rss_growth_mb: round(rssMax - rssBefore),
  };
}

function rssMb(): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'));
  return match ? Number(match[1]) / 1024 : NaN;
}
