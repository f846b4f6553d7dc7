import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { DenClient } from '../client/client.ts';
import { openExec } from '../client/exec.ts';
import { openTerminal } from '../client/terminal.ts';
import type { WorkspaceEvent } from '../protocol/events.ts';
import { agentKey } from '../server/agents/hub-types.ts';
import { openStore, type Store } from '../server/store/connect.ts';
import { createTestDatabase, postgresSkipReason } from './support/postgres.ts';
import { TEST_PASSWORD } from './support/users.ts';

/**
 * Two den replicas (real `den server` child processes) on one PostgreSQL database and one data
 * dir (the process runtime's state), behind HAProxy, which sends users to A while A is up. The
 * agent of the workspace is connected to B (B built it: A's one build worker was busy), so the
 * user's exec, terminal, build log follow and event stream on A all reach it through B. Then B is
 * killed with SIGKILL: A finds it dead by its heartbeat, takes over its agents' sockets, the agent
 * reconnects to A, the terminal is reattached to the same session, and the build B held is
 * finished by A.
 */

const haproxy = (() => {
  try {
    execFileSync('haproxy', ['-v'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const skipReason = postgresSkipReason ?? (haproxy ? undefined : 'haproxy is not installed; `apt-get install haproxy` (.ci/run installs it).');
if (skipReason) console.warn(`[skip] two replicas behind HAProxy: ${skipReason}`);

const ROOT = resolve(import.meta.dirname, '..');
const START_TIMEOUT_MS = 20_000;
const READY_TIMEOUT_MS = 30_000;
/** B's row expires 3 heartbeats (15 s) after its last one; A's next heartbeat sees it, the agent's backoff then reconnects */
const TAKEOVER_TIMEOUT_MS = 45_000;
const BUILD_LEASE_SECONDS = 5;
const STEP_TIMEOUT_MS = 15_000;
const OWNER = 'owner';

/** A startup script that waits for a file in the home directory, which the test creates when it wants the build to go on. */
const gated = (name: string) => ({
  name,
  workspace: {
    image: 'den/base',
    startup: [{ name: 'gate', run: 'echo "waiting at the gate"; until [ -e "$HOME/.open" ]; do sleep 0.2; done; echo "the gate opened"' }],
  },
});

describe.skipIf(skipReason !== undefined)('two replicas behind HAProxy', { timeout: 240_000 }, () => {
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it('serves a user on A with an agent held by B, and A carries on after B is killed', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'den-replicas-'));
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    const database = await createTestDatabase();
    cleanups.push(() => database.drop());
    const [portA, portB, portLb] = [await freePort(), await freePort(), await freePort()];
    const lbUrl = `http://127.0.0.1:${portLb}`;
    const replica = (port: number, workers: number) => startReplica({ port, dataDir, databaseUrl: database.url, accessUrl: lbUrl, workers });

    // A alone, with one build worker, and HAProxy in front (A first, B as the backup)
    const a = replica(portA, 1);
    cleanups.push(() => a.kill());
    await a.ready();
    const lb = startHaproxy(portLb, portA, portB, dataDir);
    cleanups.push(() => lb.kill());
    await waitUntil('HAProxy to reach A', START_TIMEOUT_MS, async () => (await fetch(`${lbUrl}/readyz`).catch(() => undefined))?.ok === true, a.output);
    const store = await openStore({ databaseUrl: database.url });
    cleanups.push(() => store.close());

    const setup = await new DenClient({ url: lbUrl }).createFirstUser({ username: OWNER, password: TEST_PASSWORD, token: { name: 'test' } });
    const den = new DenClient({ url: lbUrl, token: setup.token!.token });
    for (const name of ['busy', 'held']) await den.templates.push({ files: { 'template.yaml': stringify(gated(name)) }, activate: true });
    await den.templates.push({ files: { 'template.yaml': stringify({ name: 'plain', workspace: { image: 'den/base' } }) }, activate: true });
    const events: WorkspaceEvent[] = [];
    const watching = new AbortController();
    cleanups.push(() => watching.abort());
    void (async () => {
      for await (const event of den.workspaces.watch({ signal: watching.signal })) events.push(event);
    })().catch(() => undefined);

    // A's only worker waits at the gate of 'busy', so the builds created next go to B
    await den.workspaces.create({ name: 'busy', template: 'busy' });
    await waitForLine(store, 'busy', 'waiting at the gate', a.output);
    const b = replica(portB, 4);
    cleanups.push(() => b.kill());
    await b.ready();
    await den.workspaces.create({ name: 'held', template: 'held' });
    await den.workspaces.create({ name: 'dev', template: 'plain' });
    await waitForLine(store, 'held', 'waiting at the gate', b.output);
    await waitUntil('dev to be running and ready', READY_TIMEOUT_MS, async () => {
      const shown = await den.workspaces.get(OWNER, 'dev');
      return shown.status === 'running' && shown.agentState === 'ready';
    }, b.output);
    const replicaOf = async (workspace: string) => {
      const row = await store.db.selectFrom('workspaces').select('id').where('name', '=', workspace).executeTakeFirstOrThrow();
      return (await store.db.selectFrom('agent_locations as l').innerJoin('replicas as r', 'r.id', 'l.replica_id').select('r.url')
        .where('l.agent_key', '=', agentKey(row.id)).executeTakeFirst())?.url;
    };
    expect(await replicaOf('dev')).toBe(`http://127.0.0.1:${portB}`);
    expect(await replicaOf('held')).toBe(`http://127.0.0.1:${portB}`);
    // free A's worker: it finishes what B leaves behind
    await den.workspaces.cancel(OWNER, 'busy');

    // the user, on A through HAProxy: exec, a terminal, a build log follow, events
    const user = { baseUrl: lbUrl, token: setup.token!.token, owner: OWNER, workspace: 'dev' };
    const run = await execute(user, ['sh', '-c', 'echo "crossed to $1"; exit 3', 'sh', 'B']);
    expect(run).toEqual({ code: 3, stdout: 'crossed to B\n' });
    const screen: string[] = [];
    const terminal = await openTerminal({ ...user, cols: 80, rows: 24, onOutput: (data, consumed) => { screen.push(Buffer.from(data).toString()); consumed(); } });
    terminal.input('echo before-$((6*7))\r');
    await waitUntil('the terminal to echo through the relay', STEP_TIMEOUT_MS, async () => screen.join('').includes('before-42'));
    const follow = collect(den.workspaces.followLogs(OWNER, 'held', 1));
    await waitUntil('the follow on A to show the line of the agent on B', STEP_TIMEOUT_MS, async () => follow.lines.includes('waiting at the gate'));
    const devId = (await den.workspaces.get(OWNER, 'dev')).id;
    await waitUntil('A\'s event stream to show dev running, and its agent ready', STEP_TIMEOUT_MS, async () =>
      events.some((e) => e.workspaceId === devId && e.type === 'workspace.status' && e.status === 'running') &&
      events.some((e) => e.workspaceId === devId && e.type === 'agent' && e.state === 'ready'));

    // B dies without a word
    b.process.kill('SIGKILL');
    await new Promise((resolve) => b.process.once('exit', resolve));
    const ended = await terminal.ended;
    expect(ended.reason).toBe('error');
    await waitUntil('dev\'s agent to reconnect to A', TAKEOVER_TIMEOUT_MS, async () => (await replicaOf('dev')) === `http://127.0.0.1:${portA}`, a.output);

    // the same terminal session, reattached through A, now local to A
    let snapshot = '';
    const again = await openTerminal({ ...user, cols: 80, rows: 24, sessionId: terminal.attached.sessionId, onAttached: (attached) => (snapshot = attached.snapshot), onOutput: (_data, consumed) => consumed() });
    expect(snapshot).toContain('before-42');
    again.closeSession();
    await again.ended;
    expect((await execute(user, ['echo', 'still here'])).stdout).toBe('still here\n');

    // the build B held: A takes it over when its lease runs out, and finishes it once the gate opens
    const held = await store.db.selectFrom('workspaces').select('id').where('name', '=', 'held').executeTakeFirstOrThrow();
    writeFileSync(join(dataDir, 'workspaces', held.id, 'home', '.open'), '');
    await waitUntil('the build B held to finish', READY_TIMEOUT_MS, async () => (await den.workspaces.get(OWNER, 'held')).status === 'running', a.output);
    const build = await den.workspaces.build(OWNER, 'held', 1);
    expect(build.state).toBe('succeeded');
    await follow.done;
    expect(follow.lines).toContain('the gate opened');
    expect(follow.lines.some((line) => line.includes('resuming it (attempt 2'))).toBe(true);
    // B's agents, found lost by A and then connected to it, as the event stream told the user
    expect(events.filter((e) => e.workspaceId === devId && e.type === 'agent').map((e) => (e as { state: string }).state)).toEqual(expect.arrayContaining(['disconnected', 'connected']));
  });
});

interface Replica {
  process: ChildProcess;
  ready(): Promise<void>;
  output(): string;
  kill(): void;
}

function startReplica(options: { port: number; dataDir: string; databaseUrl: string; accessUrl: string; workers: number }): Replica {
  const args = [join(ROOT, 'bin/den.js'), 'server', '--listen', `127.0.0.1:${options.port}`, '--data-dir', options.dataDir,
    '--database-url', options.databaseUrl, '--access-url', options.accessUrl, '--log-level', 'warn'];
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, DEN_BUILD_LEASE_SECONDS: String(BUILD_LEASE_SECONDS), DEN_BUILD_WORKERS: String(options.workers), DEN_TRUSTED_PROXIES: 'loopback' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  const tail = () => `replica on port ${options.port}:\n${output.slice(-4000)}`;
  return {
    process: child,
    output: tail,
    ready: () => waitUntil(`the replica on port ${options.port} to answer /readyz`, START_TIMEOUT_MS,
      async () => (await fetch(`http://127.0.0.1:${options.port}/readyz`).catch(() => undefined))?.ok === true, tail),
    kill: () => void child.kill('SIGKILL'),
  };
}

/** HAProxy on loopback: users go to A while its /readyz answers, to B otherwise. */
function startHaproxy(port: number, portA: number, portB: number, dir: string): { kill(): void } {
  const config = join(dir, 'haproxy.cfg');
  writeFileSync(config, [
    'global',
    '  maxconn 256',
    'defaults',
    '  mode http',
    '  timeout connect 2s',
    '  timeout client 120s',
    '  timeout server 120s',
    '  timeout tunnel 1h',
    'frontend users',
    `  bind 127.0.0.1:${port}`,
    '  default_backend replicas',
    'backend replicas',
    '  option httpchk GET /readyz',
    `  server a 127.0.0.1:${portA} check inter 500ms fall 2 rise 1`,
    `  server b 127.0.0.1:${portB} check inter 500ms fall 2 rise 1 backup`,
    '',
  ].join('\n'));
  const child = spawn('haproxy', ['-db', '-f', config], { stdio: 'ignore' });
  return { kill: () => void child.kill('SIGKILL') };
}

async function execute(user: { baseUrl: string; token: string; owner: string; workspace: string }, command: string[]): Promise<{ code: number; stdout: string }> {
  const stdout = new PassThrough();
  const chunks: Buffer[] = [];
  stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
  const code = await openExec({ ...user, command, stdout, stderr: new PassThrough() });
  return { code, stdout: Buffer.concat(chunks).toString() };
}

function collect(lines: AsyncIterable<{ line: string }>): { lines: string[]; done: Promise<void> } {
  const seen: string[] = [];
  const done = (async () => {
    for await (const entry of lines) seen.push(entry.line);
  })();
  done.catch(() => undefined); // awaited by the test; a failure before that is the test's own
  return { lines: seen, done };
}

async function waitForLine(store: Store, workspace: string, text: string, context: () => string): Promise<void> {
  await waitUntil(`'${text}' in ${workspace}'s build log`, READY_TIMEOUT_MS, async () => {
    const row = await store.db.selectFrom('build_logs as l').innerJoin('builds as b', 'b.id', 'l.build_id').innerJoin('workspaces as w', 'w.id', 'b.workspace_id')
      .select('l.id').where('w.name', '=', workspace).where('l.line', 'like', `%${text}%`).executeTakeFirst();
    return row !== undefined;
  }, context);
}

async function waitUntil(what: string, timeoutMs: number, condition: () => Promise<boolean>, context?: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}.${context ? `\n${context()}` : ''}`);
}

function freePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolvePort(port));
    });
  });
}
