// `npm run bench:templates`: what hostile template pushes cost the server. Three clients push
// the same document at once, several times each, while a fourth asks /healthz every few ms;
// the reference is /healthz on the same server with no push running. Reports /healthz latency
// (p50 and max) and how far the server's RSS rose above its level before the pushes. Prints
// progress to stderr and one JSON object as the last line of stdout (docs/benchmarks.md).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { MAX_YAML_NODES } from '../server/templates/yaml-bounds.ts';
import { freePort, median, round, waitFor } from './support.ts';

const root = resolve(import.meta.dirname, '..');
const PUSHERS = 3;
const ROUNDS = Number(process.env.BENCH_TEMPLATE_ROUNDS ?? 5);
const REFERENCE_MS = 3_000;
const HEALTH_INTERVAL_MS = 5;
const STARTUP_TIMEOUT_MS = 30_000;
/** den's default body limit is 4 MiB (+64 KiB); each push body is just under it, as JSON. */
const BODY_BYTES = 3_800_000;

const say = (line: string) => process.stderr.write(`${line}\n`);
const head = 'name: bench-bomb\nworkspace:\n  image: x\n';

/** The shapes the probe used, and the largest document the node limit lets through to the parser. */
const documents: Record<string, string> = {
  nested_block_sequences: `${head}x: ${'- '.repeat(BODY_BYTES / 2)}x\n`,
  // '- 1\n' is five bytes in JSON.
  flat_list: `${head}x:\n${'- 1\n'.repeat(BODY_BYTES / 5)}`,
  // Two nodes per item: one item short of the limit, refused only by the schema after a full parse.
  at_node_limit: `${head}x:\n${'- 1\n'.repeat(MAX_YAML_NODES / 2 - 10)}`,
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

  for (const [name, text] of Object.entries(documents)) {
    say(`${name}: ${PUSHERS} clients push ${Math.round(text.length / 1000)} kB ${ROUNDS} times each`);
    const body = JSON.stringify({ files: { 'template.yaml': text } });
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
    const measured = await sampleHealth(pushing);
    results[name] = { ...measured, push_median_ms: round(median(pushTimes)), answers: Object.fromEntries(answers) };
    say(`  /healthz p50 ${measured.healthz_p50_ms} ms, max ${measured.healthz_max_ms} ms; RSS +${measured.rss_growth_mb} MB; push median ${round(median(pushTimes))} ms; ${[...answers].map(([a, n]) => `${n}x ${a}`).join(', ')}`);
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

/** Asks /healthz one request at a time until `until` settles; RSS is read alongside. */
async function sampleHealth(until: Promise<unknown>) {
  let done = false;
  const finished = until.finally(() => { done = true; });
  const rssBefore = rssMb();
  let rssMax = rssBefore;
  const latencies: number[] = [];
  while (!done) {
    const started = performance.now();
    const response = await fetch(`${url}/healthz`);
    await response.text();
    latencies.push(performance.now() - started);
    rssMax = Math.max(rssMax, rssMb());
    await new Promise((r) => setTimeout(r, HEALTH_INTERVAL_MS));
  }
  await finished;
  return {
    healthz_samples: latencies.length,
    healthz_p50_ms: round(median(latencies)),
    healthz_max_ms: round(Math.max(...latencies)),
    rss_before_mb: round(rssBefore),
    rss_growth_mb: round(rssMax - rssBefore),
  };
}

function rssMb(): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'));
  return match ? Number(match[1]) / 1024 : NaN;
}
