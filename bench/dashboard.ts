// `npm run bench:dashboard`: the dashboard's initial JavaScript (gzipped, against the 250 KB
// budget) and the first meaningful paint of the workspaces list with 200 workspaces on loopback,
// side by side with the same page for a user who has none (the reference: the page's own cost
// without the data). A real den server (child process, SQLite) and Debian's Chromium; the 200
// workspaces are rows written into the server's database (stopped, each with a finished build),
// not 200 running agents. Prints progress to stderr and one JSON object as the last line of
// stdout. See docs/benchmarks.md for recorded results.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type Page } from 'playwright-core';
import { createWebBuilder } from '../server/web/build.ts';
import { openStore } from '../server/store/connect.ts';
import { freePort, median, round, waitFor } from './support.ts';

const root = resolve(import.meta.dirname, '..');
const WORKSPACES = Number(process.env.BENCH_WORKSPACES ?? 200);
const SAMPLES = Number(process.env.BENCH_SAMPLES ?? 7);
const BUDGET_KB = 250;
const PASSWORD = 'bench-password-1';
const CHROMIUM = '/usr/bin/chromium';
const say = (line: string) => process.stderr.write(`${line}\n`);

const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, workspaces: WORKSPACES };

// ---- 1. initial JavaScript of the workspaces page ----
const build = await createWebBuilder({ fallbackDir: join(root, '.den') }).current();
const html = readFileSync(join(build.dir, 'index.html'), 'utf8');
const initial = [...html.matchAll(/(?:src|href)="\/web\/[^/]+\/(assets\/[^"]+\.js)"/g)].map((match) => match[1]);
const gzipped = (file: string) => statSync(join(build.dir, `${file}.gz`)).size;
const initialKb = initial.reduce((sum, file) => sum + gzipped(file), 0) / 1024;
const lazy = readdirSync(join(build.dir, 'assets')).filter((file) => file.endsWith('.js') && !initial.includes(`assets/${file}`)).map((file) => `assets/${file}`);
results.initial_js_gzip_kb = round(initialKb);
results.initial_js_files = initial;
results.budget_kb = BUDGET_KB;
say(`initial JS of the workspaces page: ${round(initialKb)} KB gzipped in ${initial.length} files (budget ${BUDGET_KB} KB)`);

// ---- 2. first meaningful paint of the list ----
const dataDir = mkdtempSync(join(tmpdir(), 'den-bench-dashboard-'));
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const server = spawn(process.execPath, [join(root, 'bin/den.js'), 'server', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--log-level', 'warn'], {
  stdio: ['ignore', 'inherit', 'inherit'],
});
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] });
try {
  await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => null))?.ok === true, 30_000, 'den server ready');
  const setup = await post('/api/v1/setup/first-user', { username: 'bench', password: PASSWORD, token: { name: 'bench' } });
  const token = (await setup.json()).token.token as string;
  await post('/api/v1/users', { username: 'empty', password: PASSWORD }, token);
  const pushed = await post('/api/v1/templates', { files: { 'template.yaml': readFileSync(join(root, 'templates/starter/template.yaml'), 'utf8') }, activate: true }, token);
  if (pushed.status !== 201) throw new Error(`pushing the template failed: ${pushed.status}`);
  await seedWorkspaces(WORKSPACES);
  const api = await timeList(token);
  results.api_list_ms_median = api;
  say(`GET /api/v1/workspaces?limit=500 (${WORKSPACES} workspaces): ${api} ms median`);

  for (const [user, key] of [['bench', 'fmp_200_ms'], ['empty', 'fmp_empty_ms']] as const) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    await page.goto(`${url}/login`);
    await page.getByLabel('Username').fill(user);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Workspaces' }).waitFor();
    const samples: number[] = [];
    for (let i = 0; i < SAMPLES; i++) samples.push(await firstPaintOfList(page, user === 'bench' ? WORKSPACES : 0));
    results[key] = round(median(samples));
    results[`${key}_samples`] = samples.map(round);
    say(`first meaningful paint of /workspaces as ${user}: ${round(median(samples))} ms median of ${SAMPLES} (${samples.map(round).join(', ')})`);
    await context.close();
  }
  const largest = lazy.reduce((a, b) => (gzipped(a) >= gzipped(b) ? a : b));
  results.on_demand_js_gzip_kb = round(lazy.reduce((sum, file) => sum + gzipped(file), 0) / 1024);
  results.largest_on_demand_chunk = { file: largest, gzip_kb: round(gzipped(largest) / 1024) };
} finally {
  await browser.close();
  server.kill('SIGTERM');
  await new Promise((r) => server.once('exit', r));
  rmSync(dataDir, { recursive: true, force: true });
}
process.stdout.write(`${JSON.stringify(results)}\n`);

/**
 * A fresh load of /workspaces (cache kept, as a returning user has it): milliseconds from the
 * navigation's start until the table shows every row.
 */
async function firstPaintOfList(page: Page, rows: number): Promise<number> {
  await page.goto('about:blank');
  await page.goto(`${url}/workspaces`);
  const selector = rows > 0 ? `[data-testid=workspaces] tbody tr:nth-child(${rows})` : '[data-testid=workspaces] tbody tr';
  await page.waitForSelector(selector);
  // the next frame is when those rows are painted
  return page.evaluate(() => new Promise<number>((done) => requestAnimationFrame(() => done(performance.now()))));
}

async function timeList(token: string): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    const started = performance.now();
    const response = await fetch(`${url}/api/v1/workspaces?limit=500`, { headers: { authorization: `Bearer ${token}` } });
    const body = (await response.json()) as { total: number };
    if (body.total !== WORKSPACES) throw new Error(`the list has ${body.total} workspaces, not ${WORKSPACES}`);
    samples.push(performance.now() - started);
  }
  return round(median(samples));
}

/** Stopped workspaces with a finished build each, written into the server's SQLite database (WAL: the server keeps running). */
async function seedWorkspaces(count: number): Promise<void> {
  const store = await openStore({ dataDir });
  try {
    const owner = await store.db.selectFrom('users').select('id').where('username', '=', 'bench').executeTakeFirstOrThrow();
    const template = await store.db.selectFrom('templates').select(['id', 'active_version_id']).where('name', '=', 'starter').executeTakeFirstOrThrow();
    const now = new Date().toISOString();
    for (let i = 0; i < count; i++) {
      const workspaceId = randomUUID();
      const buildId = randomUUID();
      await store.db.insertInto('workspaces').values({
        id: workspaceId, name: `ws-${String(i).padStart(3, '0')}`, owner_id: owner.id, template_id: template.id, template_version_id: template.active_version_id!,
        params_json: '{"greeting":"hello"}', status: 'stopped', last_build_id: buildId, created_at: now, updated_at: now, deleted_at: null,
      }).execute();
      await store.db.insertInto('builds').values({
        id: buildId, workspace_id: workspaceId, number: 1, transition: 'stop', reason: 'bench', initiator_id: owner.id,
        template_version_id: template.active_version_id!, params_json: '{}', state: 'succeeded', error: null, steps_json: '[]',
        lease_owner: null, lease_expires_at: null, attempts: 0, created_at: now, started_at: now, finished_at: now,
      }).execute();
    }
  } finally {
    await store.close();
  }
}

function post(path: string, body: unknown, token?: string): Promise<Response> {
  return fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
}
