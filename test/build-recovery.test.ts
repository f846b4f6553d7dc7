import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { TemplateInput } from '../protocol/template.ts';
import { MAX_BUILD_ATTEMPTS } from '../server/builds/service.ts';
import { openStore, type Store } from '../server/store/connect.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { createTestDatabase, storeDialects } from './support/postgres.ts';
import { TEST_PASSWORD } from './support/users.ts';

/**
 * Kill-mid-build recovery: a real `den server` child process is killed with SIGKILL while its
 * builds wait for startup scripts; a new server over the same store must resume or cleanly fail
 * every interrupted build, so no workspace stays "starting".
 */

const SERVER_START_TIMEOUT_MS = 20_000;
const MID_BUILD_TIMEOUT_MS = 20_000;
const RECOVERY_TIMEOUT_MS = 45_000;
const LEASE_SECONDS = 5;
/** how often the child server is started on another port when the probed one was taken before it bound it */
const PORT_ATTEMPTS = 3;
const ROOT = resolve(import.meta.dirname, '..');

// Blocks the first time only: the resumed build finds the marker in the (kept) home and goes on.
const blockingOnce: TemplateInput = {
  name: 'blocking-once',
  workspace: {
    image: 'den/base:latest',
    startup: [{ name: 'slow-setup', run: 'if [ -e "$HOME/.resumed" ]; then echo "setup already done"; else touch "$HOME/.resumed"; echo "setup is blocking"; sleep 600; fi' }],
  },
};

describe.each(storeDialects)('build recovery after the server is killed mid-build on %s', { timeout: 120_000 }, (dialect) => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it('resumes an interrupted build, fails one that was interrupted too often, and leaves no workspace starting', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'den-recovery-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const pg = dialect === 'postgres' ? await createTestDatabase() : undefined;
    if (pg) cleanups.push(() => pg.drop());

    // 1. A real server in a child process, two builds blocked in their startup scripts.
    const child = await startChildServer(dataDir, pg?.url);
    cleanups.push(() => void child.process.kill('SIGKILL'));
    const { url } = child;
    const token = await firstUserToken(url);
    const store = await openStore({ dataDir, databaseUrl: pg?.url });
    cleanups.push(() => store.close());
    const pushed = await fetch(`${url}/api/v1/templates`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ files: { 'template.yaml': stringify(blockingOnce) }, activate: true }),
    });
    expect(pushed.status).toBe(201);
    for (const name of ['resumed', 'given-up']) {
      const created = await fetch(`${url}/api/v1/workspaces`, {
        method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name, template: 'blocking-once' }),
      });
      expect(created.status).toBe(202);
    }
    await waitFor('both builds to block in their startup script', MID_BUILD_TIMEOUT_MS, async () => {
      const blocked = await store.db.selectFrom('build_logs').select('build_id').where('line', 'like', '%setup is blocking%').execute();
      return new Set(blocked.map((row) => row.build_id)).size === 2;
    }, () => child.output());

    // 2. Kill it: no graceful shutdown, the leases stay behind.
    child.process.kill('SIGKILL');
    await new Promise((resolve) => child.process.once('exit', resolve));
    const interrupted = await workspaceBuilds(store);
    expect(interrupted.map((w) => [w.name, w.status, w.state])).toEqual([['given-up', 'starting', 'running'], ['resumed', 'starting', 'running']]);
    // Pretend the second build had already been interrupted as often as den tolerates.
    await store.db.updateTable('builds').set({ attempts: MAX_BUILD_ATTEMPTS }).where('id', '=', interrupted[0].build_id).execute();

    // 3. A new server over the same store and data dir, with a short lease.
    const server: TestServer = await startTestServer({ dialect, dataDir, databaseUrl: pg?.url, listen: true, config: { buildLeaseSeconds: LEASE_SECONDS } });
    cleanups.push(() => server.close());
    await waitFor('every interrupted build to finish', RECOVERY_TIMEOUT_MS, async () =>
      (await workspaceBuilds(store)).every((w) => w.state === 'succeeded' || w.state === 'failed'));

    const [givenUp, resumed] = await workspaceBuilds(store);
    expect(resumed).toMatchObject({ name: 'resumed', status: 'running', state: 'succeeded', attempts: 2 });
    expect(givenUp).toMatchObject({ name: 'given-up', status: 'failed', state: 'failed' });
    expect(givenUp.error).toMatch(/^The build was interrupted \d+ times because the server running it stopped, so den gave up on it\. Run `den start` to try again\.$/);
    const resumedLog = (await server.den.builds.logs.read(resumed.build_id)).map((row) => row.line);
    expect(resumedLog).toContain(`The server running this build stopped before it finished; resuming it (attempt 2 of ${MAX_BUILD_ATTEMPTS}).`);
    expect(resumedLog.some((line) => line.includes('setup already done'))).toBe(true);

    // The given-up workspace can be deleted; its leftover processes go with it.
    const identity = { id: givenUp.id, name: givenUp.name, ownerId: '', ownerName: '' };
    await server.den.driver.delete(identity, { log: () => {}, signal: new AbortController().signal });
    await server.den.driver.delete({ ...identity, id: resumed.id, name: resumed.name }, { log: () => {}, signal: new AbortController().signal });
    expect(await server.den.driver.listWorkspaceIds()).toEqual([]);
  });
});

interface ChildServer {
  process: ChildProcess;
  url: string;
  output(): string;
}

/**
 * `den server` in a child process, once it answers /readyz. The port is free when probed, but the
 * child binds it only seconds later (it loads and migrates first), and another process may take
 * it meanwhile: then the child says so and exits, and it is started again on another port.
 */
async function startChildServer(dataDir: string, databaseUrl?: string): Promise<ChildServer> {
  for (let attempt = 1; ; attempt++) {
    const child = spawnChildServer(await freePort(), dataDir, databaseUrl);
    const exited = () => child.process.exitCode !== null || child.process.signalCode !== null;
    try {
      await waitFor('the child server to answer /readyz', SERVER_START_TIMEOUT_MS, async () =>
        exited() || (await fetch(`${child.url}/readyz`).catch(() => undefined))?.ok === true, () => child.output());
    } catch (error) {
      child.process.kill('SIGKILL');
      throw error;
    }
    if (!exited()) return child;
    if (!child.output().includes('is already in use') || attempt === PORT_ATTEMPTS) {
      throw new Error(`The child den server exited before it answered /readyz:\n${child.output()}`);
    }
  }
}

function spawnChildServer(port: number, dataDir: string, databaseUrl?: string): ChildServer {
  // no SSH port: the default one (2222) is shared by every den server on the machine
  const args = [join(ROOT, 'bin/den.js'), 'server', '--listen', `127.0.0.1:${port}`, '--ssh-port', '0', '--data-dir', dataDir, '--log-level', 'warn'];
  if (databaseUrl) args.push('--database-url', databaseUrl);
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, DEN_BUILD_LEASE_SECONDS: String(LEASE_SECONDS) }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  return { process: child, url: `http://127.0.0.1:${port}`, output: () => output.slice(-4000) };
}

async function firstUserToken(url: string): Promise<string> {
  const response = await fetch(`${url}/api/v1/setup/first-user`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'owner', password: TEST_PASSWORD, token: { name: 'test' } }),
  });
  const body = (await response.json()) as { token: { token: string } };
  return body.token.token;
}

async function workspaceBuilds(store: Store) {
  return store.db
    .selectFrom('workspaces')
    .innerJoin('builds', 'builds.id', 'workspaces.last_build_id')
    .select(['workspaces.id', 'workspaces.name', 'workspaces.status', 'builds.id as build_id', 'builds.state', 'builds.attempts', 'builds.error'])
    .orderBy('workspaces.name')
    .execute();
}

async function waitFor(what: string, timeoutMs: number, condition: () => Promise<boolean>, context?: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}.${context ? `\n${context()}` : ''}`);
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}
