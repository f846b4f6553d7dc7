import { randomUUID } from 'node:crypto';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { AgentManifestInput } from '../protocol/agent.ts';
import {
  BINARY_TYPE,
  decodeServerMessage,
  encodeClientMessage,
  TERMINAL_CLOSE,
  terminalSessionListSchema,
  type ClientMessage,
  type ServerMessage,
} from '../protocol/terminal.ts';
import { ParsingClient, waitFor } from '../agent/terminal/testing.ts';
import type { TerminalAttachment } from '../agent/terminal/session.ts';
import { createApiToken } from '../server/auth/api-tokens.ts';
import { currentAgentBuild } from '../server/agents/tokens.ts';
import type { RuntimeDriver } from '../server/runtimes/driver.ts';
import { systemClock } from '../server/store/time.ts';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import type { Config } from '../server/config.ts';
import { idleDriver } from './support/idle-driver.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { readTemplateFolder, waitForWorkspaceReady } from './support/templates.ts';
import { api, loginWithCookie, setupOwner, type Api } from './support/users.ts';
import { startRealAgent } from './support/real-agent.ts';
import { seedWorkspace, type SeededWorkspace } from './support/workspace-seed.ts';

/**
 * The browser terminal end to end: a client speaking protocol/terminal.ts to the real den server,
 * relayed over the agent link to a real agent process running real bash on node-pty. No timing
 * assertions: every wait is for a condition, with a generous timeout that names what it waited for.
 */

/** After a server restart or a cut link the agent redials with backoff capped at 5 s. */
const RECONNECT_TIMEOUT_MS = 30_000;
const OUTPUT_TIMEOUT_MS = 20_000;
/** A quiet shell: no rc files, a fixed prompt. The session's command and env travel in `attach` (1.1). */
const BASH = ['bash', '--norc', '--noprofile'];
const PROMPT = 'den$ ';

interface Ctx {
  server: TestServer;
  alice: SeededWorkspace;
  aliceToken: string;
  bob: SeededWorkspace;
  bobToken: string;
  stopped: SeededWorkspace;
  home: string;
  agent?: ChildProcess;
  dataDir: string;
  port: number;
}

describe('browser terminal through the den server', () => {
  const ctx = {} as Ctx;
  const dirs: string[] = [];

  beforeAll(async () => {
    ctx.dataDir = mkdtempSync(join(tmpdir(), 'den-term-srv-'));
    dirs.push(ctx.dataDir);
    ctx.server = await startTestServer({ dataDir: ctx.dataDir, listen: true, startWorkers: false, driver: () => idleDriver });
    ctx.port = Number(new URL(ctx.server.url!).port);
    const db = ctx.server.store.db;
    ctx.alice = await seedWorkspace(db, { username: 'alice', workspaceName: 'dev' });
    ctx.bob = await seedWorkspace(db, { username: 'bob', workspaceName: 'mine' });
    ctx.stopped = await seedWorkspace(db, { username: 'alice-stopped', workspaceName: 'off' });
    await db.updateTable('workspaces').set({ status: 'stopped' }).where('id', '=', ctx.stopped.workspaceId).execute();
    ctx.aliceToken = (await createApiToken(db, systemClock, ctx.alice.userId, { name: 't' })).token;
    ctx.bobToken = (await createApiToken(db, systemClock, ctx.bob.userId, { name: 't' })).token;

    ctx.home = mkdtempSync(join(tmpdir(), 'den-term-home-'));
    dirs.push(ctx.home);
    // ~1 MB of numbered lines for the flood test
    writeFileSync(join(ctx.home, 'big'), Array.from({ length: 80_000 }, (_, i) => `L${String(i).padStart(6, '0')}`).join('\n') + '\n');
    ctx.agent = await startRealAgent(ctx.server, ctx.alice, ctx.home, manifest());
  });
  afterAll(async () => {
    ctx.agent?.kill('SIGKILL');
    await ctx.server?.app.close();
    await ctx.server?.store.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
  });

  /** command null: the agent's default (the login shell) */
  const open = (options: { sessionId?: string; token?: string | null; workspace?: SeededWorkspace; command?: string[] | null } = {}) =>
    TestTerminal.open(ctx.server.url!, options.token === undefined ? ctx.aliceToken : options.token, options.workspace ?? ctx.alice, options.sessionId, options.command === undefined ? BASH : (options.command ?? undefined));

  it('attaches a new session, echoes what is typed, and starts in the workspace home with its env', async () => {
    const term = await open();
    await term.waitForText(PROMPT);
    term.type('echo "$GREETING from $(pwd)"\r');
    await term.waitForText(`hi there from ${ctx.home}`);
    expect(term.sessionId).toMatch(/^[A-Za-z0-9_-]+$/);
    term.close();
    await term.closed;
  });

  it('starts the login shell when no command is given', async () => {
    const term = await open({ command: null });
    term.type('echo "shell=$0"; exit\r');
    await term.waitForText('shell=');
    const closed = await term.closed;
    expect(closed.code).toBe(TERMINAL_CLOSE.sessionEnded);
    expect(term.messages.some((m) => m.type === 'exit')).toBe(true);
  });

  it('reattaches after the websocket closes (a reload) with the same screen and no lost output', async () => {
    const first = await open();
    await first.waitForText(PROMPT);
    first.type('for i in 1 2 3; do echo "row $i"; done\r');
    // the typed line says `row $i`: wait for the printed row, then for the prompt after it
    await first.waitForText('row 3\r\n');
    await first.waitForText(PROMPT, first.text.lastIndexOf('row 3\r\n'));
    const before = await first.quietSerialize();
    first.socket.close();
    await first.closed;

    const second = await open({ sessionId: first.sessionId });
    expect(second.sessionId).toBe(first.sessionId);
    expect(await second.quietSerialize()).toBe(before);

    // output printed while nobody is attached arrives with the next attach: a background job
    // prints once the test says so (after this client left), then says it did. The marker is
    // computed, so the command line on the screen does not contain it; the line fits 80 columns,
    // so its echo is not wrapped.
    const job = '(until [ -e go ];do sleep .1;done;echo late-$((6*7))-mark;touch done) &';
    second.type(`${job}\r`);
    await second.waitForText(job);
    await second.waitForText(PROMPT, second.text.lastIndexOf(job));
    second.socket.close();
    await second.closed;
    writeFileSync(join(ctx.home, 'go'), '');
    await waitFor(() => existsSync(join(ctx.home, 'done')), OUTPUT_TIMEOUT_MS, 'the background job to print while nobody is attached');
    const third = await open({ sessionId: first.sessionId });
    await third.waitForScreen('late-42-mark');
    third.type('echo after-reload\r');
    await third.waitForText('after-reload\r\n');
    third.close();
    await third.closed;
  });

  it('shows the same output to two clients of one session', async () => {
    const a = await open();
    await a.waitForText(PROMPT);
    const b = await open({ sessionId: a.sessionId });
    a.type('seq 1 300 | tail -2; echo both-see-this\r');
    await a.waitForText('both-see-this\r\n');
    await b.waitForText('both-see-this\r\n');
    await a.waitForText(PROMPT, a.text.lastIndexOf('both-see-this\r\n'));
    await b.waitForText(PROMPT, b.text.lastIndexOf('both-see-this\r\n'));
    expect(await b.quietSerialize()).toBe(await a.quietSerialize());
    a.close();
    await Promise.all([a.closed, b.closed]);
    expect(b.messages.some((m) => m.type === 'exit')).toBe(true);
  });

  it('lists sessions and closes one through the API', async () => {
    const term = await open();
    await term.waitForText(PROMPT);
    const listed = await request(ctx, 'GET', `/terminals`);
    expect(listed.status).toBe(200);
    const { sessions } = terminalSessionListSchema.parse(listed.json);
    const mine = sessions.find((s) => s.id === term.sessionId);
    expect(mine).toMatchObject({ clients: 1, idleSince: null, command: BASH, cols: 80, rows: 24 });
    expect(Number.isNaN(Date.parse(mine!.createdAt))).toBe(false);

    const deleted = await request(ctx, 'DELETE', `/terminals/${term.sessionId}`);
    expect(deleted.status).toBe(204);
    const closed = await term.closed;
    expect(closed.code).toBe(TERMINAL_CLOSE.sessionEnded);
    expect(term.messages.some((m) => m.type === 'exit')).toBe(true);
    const again = await request(ctx, 'DELETE', `/terminals/${term.sessionId}`);
    expect(again.status).toBe(404);
    expect(again.json.error.code).toBe('TERMINAL_SESSION_NOT_FOUND');
    const after = terminalSessionListSchema.parse((await request(ctx, 'GET', `/terminals`)).json);
    expect(after.sessions.some((s) => s.id === term.sessionId)).toBe(false);
  });

  it('refuses someone else\'s workspace and anonymous callers, on the socket and the sessions API', async () => {
    const term = await open();
    await term.waitForText(PROMPT);
    expect(await TestTerminal.refusedUpgrade(ctx.server.url!, ctx.bobToken, ctx.alice)).toEqual({ status: 404, code: 'WORKSPACE_NOT_FOUND' });
    expect(await TestTerminal.refusedUpgrade(ctx.server.url!, null, ctx.alice)).toEqual({ status: 401, code: 'UNAUTHENTICATED' });
    expect((await request(ctx, 'GET', '/terminals', ctx.bobToken)).status).toBe(404);
    expect((await request(ctx, 'DELETE', `/terminals/${term.sessionId}`, ctx.bobToken)).status).toBe(404);
    expect((await request(ctx, 'GET', '/terminals', null)).status).toBe(401);
    // bob cannot reach alice's session through his own workspace either: ids are per agent
    const viaBob = await open({ token: ctx.bobToken, workspace: ctx.bob, sessionId: term.sessionId });
    const refused = await viaBob.closed;
    expect([TERMINAL_CLOSE.goingAway, TERMINAL_CLOSE.workspaceNotRunning]).toContain(refused.code);
    // the session is untouched
    term.type('echo still-here\r');
    await term.waitForText('still-here\r\n');
    term.close();
    await term.closed;
  });

  it('closes 4404 for an unknown session id and reports a stopped workspace', async () => {
    const unknown = await open({ sessionId: 'no-such-session' });
    expect((await unknown.closed).code).toBe(TERMINAL_CLOSE.sessionNotFound);
    expect(unknown.errors()).toEqual(['TERMINAL_SESSION_NOT_FOUND']);

    const stoppedToken = (await createApiToken(ctx.server.store.db, systemClock, ctx.stopped.userId, { name: 't' })).token;
    const stopped = await open({ token: stoppedToken, workspace: ctx.stopped });
    expect((await stopped.closed).code).toBe(TERMINAL_CLOSE.workspaceNotRunning);
    expect(stopped.errors()).toEqual(['WORKSPACE_NOT_RUNNING']);
    const listed = await request(ctx, 'GET', '/terminals', stoppedToken, ctx.stopped);
    expect([listed.status, listed.json.error.code]).toEqual([409, 'WORKSPACE_NOT_RUNNING']);
  });

  it('answers garbage and oversized frames with a coded error, clamps absurd sizes, and keeps serving', async () => {
    const garbage: Array<[string, string | Buffer]> = [
      ['unknown binary type', Buffer.from([0x07, 1, 2, 3])],
      ['empty binary', Buffer.alloc(0)],
      ['invalid JSON', '{"type":'],
      ['unknown type', '{"type":"launch-missiles"}'],
      ['oversized input', Buffer.concat([Buffer.from([BINARY_TYPE.input]), Buffer.alloc(100 * 1024, 0x61)])],
    ];
    for (const [what, frame] of garbage) {
      const term = await open();
      await term.waitForText(PROMPT);
      term.socket.send(frame);
      const closed = await term.closed;
      expect([what, closed.code, term.errors()]).toEqual([what, TERMINAL_CLOSE.protocolError, ['TERMINAL_MESSAGE_INVALID']]);
    }
    // garbage as the first message, before any attach
    const raw = await TestTerminal.raw(ctx.server.url!, ctx.aliceToken, ctx.alice);
    raw.send('not json at all');
    expect(await raw.closeCode).toBe(TERMINAL_CLOSE.protocolError);

    const term = await open();
    await term.waitForText(PROMPT);
    term.send({ type: 'resize', cols: 0, rows: 0 });
    term.type('stty size\r');
    await term.waitForText('1 2\r\n');
    term.send({ type: 'resize', cols: 100_000, rows: 100_000 });
    term.type('stty size\r');
    await term.waitForText('500 1000\r\n');
    term.send({ type: 'resize', cols: 80, rows: 24 });
    term.type('echo still-serving\r');
    await term.waitForText('still-serving\r\n');
    term.close();
    await term.closed;
  });

  it('stops a flood with Ctrl-C through the whole path, losing no byte', async () => {
    const term = await open();
    await term.waitForText(PROMPT);
    term.trackSequence();
    // noflsh: the tty must not discard queued output on ^C, so every byte the flood wrote is seen;
    // -echo -echoctl: what is typed during the flood must not be echoed into the middle of a line
    // the flood is one process that never exits on its own: with `while :; do cat big; done`, a ^C
    // landing after a cat had written its last byte but before bash reaped it made bash take the
    // SIGINT as handled by the child (it exited normally) and go on looping, so the flood never stopped
    term.type(`stty noflsh -echo -echoctl; awk 'BEGIN { for (;;) for (i = 0; i < 80000; i++) printf "L%06d\\n", i }'\r`);
    await waitFor(() => term.received > 4 * 1024 * 1024, OUTPUT_TIMEOUT_MS * 3, '4 MB of flood output');
    term.type('\x03');
    // the marker is computed, so the command line (echoed by readline) does not contain it
    term.type('echo flood-$((1+1))-over\r');
    await term.waitForText('flood-2-over\r\n', 0, OUTPUT_TIMEOUT_MS * 3);
    await term.waitForText(PROMPT, term.text.lastIndexOf('flood-2-over\r\n'));
    await waitFor(() => term.client.parsed === term.client.received, OUTPUT_TIMEOUT_MS, 'the client to parse everything');
    // every numbered line followed its predecessor: nothing dropped or duplicated in between
    expect(term.sequence.lines).toBeGreaterThan(100_000);
    expect(term.sequence.breaks).toEqual([]);
    term.close();
    await term.closed;
  });

  it('keeps other sessions answering while one session floods (fairness on the shared link)', async () => {
    const flooding = await open();
    const quiet = await open();
    await Promise.all([flooding.waitForText(PROMPT), quiet.waitForText(PROMPT)]);
    flooding.type('while :; do cat big; done\r');
    await waitFor(() => flooding.received > 2 * 1024 * 1024, OUTPUT_TIMEOUT_MS * 3, '2 MB of flood output');
    // every round trip of the quiet session completes while the flood never stops: a starved
    // session would time out here, since the flood only ends when the test ends it
    for (let i = 0; i < 20; i++) {
      const from = quiet.text.length;
      quiet.type(`echo turn-$((${i} + 1000))\r`); // the output, not the echoed command line, is awaited
      await quiet.waitForText(`turn-${i + 1000}\r\n`, from);
    }
    const floodedSoFar = flooding.received;
    await waitFor(() => flooding.received > floodedSoFar + 256 * 1024, OUTPUT_TIMEOUT_MS, 'the flood to go on after the quiet session was served');
    flooding.type('\x03');
    flooding.close();
    quiet.close();
    await Promise.all([flooding.closed, quiet.closed]);
  });

  it('keeps the session across a cut agent link and a den server restart', async () => {
    const term = await open();
    await term.waitForText(PROMPT);
    // the output first: looking for the prompt after a line not printed yet would find the first prompt
    term.type('echo before-$((2*2))-cut\r');
    await term.waitForText('before-4-cut\r\n');
    await term.waitForText(PROMPT, term.text.lastIndexOf('before-4-cut\r\n'));
    const before = await term.quietSerialize();

    // cut every websocket of the server (the agent link and this client): the agent redials
    for (const client of ctx.server.app.websocketServer.clients) client.terminate();
    await term.closed;
    await waitFor(() => ctx.server.den.agents.isConnected(ctx.alice.workspaceId), RECONNECT_TIMEOUT_MS, 'the agent to reconnect after the cut');
    const afterCut = await open({ sessionId: term.sessionId });
    expect(await afterCut.quietSerialize()).toBe(before);
    afterCut.socket.close();
    await afterCut.closed;

    // a server restart over the same data dir and port; an attached client is told to come back
    const duringRestart = await open({ sessionId: term.sessionId });
    await ctx.server.app.close();
    expect((await duringRestart.closed).code).toBe(TERMINAL_CLOSE.goingAway);
    expect(duringRestart.errors()).toEqual(['SERVER_SHUTTING_DOWN']);
    await ctx.server.store.close();
    ctx.server = await startTestServer({ dataDir: ctx.dataDir, port: ctx.port, listen: true, startWorkers: false, driver: () => idleDriver });
    await waitFor(() => ctx.server.den.agents.isConnected(ctx.alice.workspaceId), RECONNECT_TIMEOUT_MS, 'the agent to reconnect after the restart');
    const afterRestart = await open({ sessionId: term.sessionId });
    expect(await afterRestart.quietSerialize()).toBe(before);
    afterRestart.type('echo after-restart\r');
    await afterRestart.waitForText('after-restart\r\n');
    afterRestart.close();
    await afterRestart.closed;
  });
});

/**
 * The same path with the workspace created through the API and its agent started by a real
 * runtime: the process runtime (agent from dist/agent.mjs, node-pty from the checkout) and docker
 * (the agent bundle with its own Node and node-pty, mounted into den/base).
 */
const docker = new Dockerode();
const dockerReady = await docker.ping().then(() => docker.getImage('den/base:bookworm').inspect().then(() => true), () => false).catch(() => false);
const dockerSkip = dockerReady ? undefined : 'no Docker engine or no den/base:bookworm image (run bash test/services/docker.sh and npm run images)';
if (dockerSkip) console.warn(`[skip] terminal on the docker runtime: ${dockerSkip}.`);
const RUNTIMES: Array<{ name: string; skip?: string; driver?: (config: Config) => Promise<RuntimeDriver> }> = [
  { name: 'process' },
  {
    name: 'docker',
    skip: dockerSkip,
    driver: async () => {
      const { createDockerDriver } = await import('../server/runtimes/docker/driver.ts');
      const dir = mkdtempSync(join(tmpdir(), 'den-term-docker-'));
      // an instance of its own: the server's garbage collection never touches other test files' objects
      return createDockerDriver({ log: pino({ level: 'silent' }), docker: docker as never, agentBundleDir: join(dir, 'agent'), stopGraceSeconds: 2, instance: `den-test-${randomUUID().slice(0, 8)}` });
    },
  },
];

describe.each(RUNTIMES)('terminal in a workspace of the $name runtime', ({ skip, driver }) => {
  let server: TestServer;
  let user: { username: string; userId: string; token: string };
  beforeAll(async () => {
    if (skip) return;
    server = await startTestServer({ listen: true, ...(driver ? { driver } : {}) });
    user = await setupOwner(server.app, 'runtime-owner');
  });
  afterAll(async () => server?.close());

  it.skipIf(skip !== undefined)(`opens a login shell in a workspace created through the API${skip ? ` (skipped: ${skip})` : ''}`, async () => {
    const client = api(server.app, user.token);
    const pushed = await client.post('/api/v1/templates', { files: readTemplateFolder(join(import.meta.dirname, '..', 'templates', 'starter')), activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    const created = await client.post('/api/v1/workspaces', { name: 'term', template: 'starter', params: { greeting: 'hello terminal' } });
    expect(created.status, JSON.stringify(created.json)).toBe(202);
    await waitForWorkspaceReady(client, user.username, 'term', 150_000);
    const ws = { username: user.username, workspaceName: 'term' } as SeededWorkspace;
    const term = await TestTerminal.open(server.url!, user.token, ws, undefined, undefined);
    term.type('echo "[$(cat ~/.den-greeting)]"; tty\r');
    await term.waitForText('[hello terminal]\r\n', 0, OUTPUT_TIMEOUT_MS * 2);
    await term.waitForText('/dev/pts/');
    const listed = await fetch(`${server.url}/api/v1/workspaces/${user.username}/term/terminals`, { headers: { authorization: `Bearer ${user.token}` } });
    expect(terminalSessionListSchema.parse(await listed.json()).sessions.map((s) => s.id)).toEqual([term.sessionId]);

    // a browser: the session cookie, accepted from den's own origin only (cookies ride cross-site websockets)
    const { cookie } = await loginWithCookie(server.app, user.username);
    expect(await TestTerminal.refusedUpgrade(server.url!, { cookie, origin: 'https://evil.example' }, ws)).toEqual({ status: 403, code: 'CSRF_FAILED' });
    expect(await TestTerminal.refusedUpgrade(server.url!, { cookie }, ws)).toEqual({ status: 403, code: 'CSRF_FAILED' });
    const browser = await TestTerminal.open(server.url!, { cookie, origin: new URL(server.url!).origin }, ws, term.sessionId);
    expect(browser.sessionId).toBe(term.sessionId);

    term.close();
    expect((await term.closed).code).toBe(TERMINAL_CLOSE.sessionEnded);
    expect((await browser.closed).code).toBe(TERMINAL_CLOSE.sessionEnded);

    // stopping the workspace hangs up its shells: an attached client sees `exit`, then 4000
    const last = await TestTerminal.open(server.url!, user.token, ws);
    last.type('echo ready-to-stop\r');
    await last.waitForText('ready-to-stop\r\n', 0, OUTPUT_TIMEOUT_MS * 2);
    expect((await client.post(`/api/v1/workspaces/${user.username}/term/stop`, {})).status).toBe(202);
    expect((await last.closed).code).toBe(TERMINAL_CLOSE.sessionEnded);
    expect(last.messages.some((m) => m.type === 'exit')).toBe(true);
  }, 180_000);

  it.skipIf(skip !== undefined)(`keeps a terminal session across an update that changes nothing and across a resumed build${skip ? ` (skipped: ${skip})` : ''}`, async () => {
    const client = api(server.app, user.token);
    const path = `/api/v1/workspaces/${user.username}/keep`;
    const pushed = await client.post('/api/v1/templates', { files: readTemplateFolder(join(import.meta.dirname, '..', 'templates', 'starter')), activate: true });
    // 200: an earlier test of this file pushed the same folder, which is the active version
    expect([200, 201], JSON.stringify(pushed.json)).toContain(pushed.status);
    expect((await client.post('/api/v1/workspaces', { name: 'keep', template: 'starter' })).status).toBe(202);
    const workspace = await waitForWorkspaceReady(client, user.username, 'keep', 150_000);
    const ws = { username: user.username, workspaceName: 'keep' } as SeededWorkspace;
    const term = await TestTerminal.open(server.url!, user.token, ws, undefined, BASH);
    term.type('echo "shell $$ started"\r');
    await term.waitForText(' started\r\n', 0, OUTPUT_TIMEOUT_MS * 2);
    const agentBuild = await currentAgentBuild(server.store.db, workspace.id);

    // `den update` with nothing to change: a start build that re-applies the same plan
    const update = await client.post(`${path}/update`, {});
    expect(update.status, JSON.stringify(update.json)).toBe(202);
    await waitForBuild(client, path, update.json.build.number, 'succeeded');
    term.type('echo "after the update"\r');
    await term.waitForText('after the update\r\n');

    // The same build resumed by another worker, as after a crash: left running with an expired lease.
    const db = server.store.db;
    const resumed = await db.selectFrom('builds').select('id').where('workspace_id', '=', workspace.id).where('number', '=', update.json.build.number).executeTakeFirstOrThrow();
    await db.updateTable('builds').set({ state: 'running', lease_owner: 'a-server-that-died', lease_expires_at: new Date(0).toISOString(), finished_at: null })
      .where('id', '=', resumed.id).execute();
    await db.updateTable('workspaces').set({ status: 'starting' }).where('id', '=', workspace.id).execute();
    server.den.builds.wake();
    const again = await waitForBuild(client, path, update.json.build.number, 'succeeded');
    expect(again.attempts).toBe(2);
    term.type('echo "after the resumed build"\r');
    await term.waitForText('after the resumed build\r\n');

    expect(term.socket.readyState).toBe(WebSocket.OPEN);
    // the agent was never replaced: it still holds the token it started with
    expect(await currentAgentBuild(server.store.db, workspace.id)).toBe(agentBuild);
    term.close();
    await term.closed;
    await client.delete(path);
  }, 180_000);
});

const BUILD_TIMEOUT_MS = 60_000;

/** Polls a build until it reaches `state`; throws with the build when it ends otherwise. */
async function waitForBuild(client: Api, workspacePath: string, number: number, state: string): Promise<Record<string, any>> {
  const deadline = performance.now() + BUILD_TIMEOUT_MS;
  for (;;) {
    const build = (await client.get(`${workspacePath}/builds/${number}`)).json;
    if (build?.state === state) return build;
    if (['succeeded', 'failed', 'canceled'].includes(build?.state) || performance.now() > deadline) {
      const logs = await client.get(`${workspacePath}/builds/${number}/logs`);
      throw new Error(`Build ${number} is ${build?.state}, not ${state}: ${JSON.stringify(build)}\n${typeof logs.json === 'string' ? logs.json : JSON.stringify(logs.json)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function manifest(): AgentManifestInput {
  return { env: { GREETING: 'hi there' }, startupScripts: [] };
}

async function request(ctx: Ctx, method: string, path: string, token: string | null = ctx.aliceToken, ws: SeededWorkspace = ctx.alice) {
  const response = await fetch(`${ctx.server.url}/api/v1/workspaces/${ws.username}/${ws.workspaceName}${path}`, {
    method,
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  const text = await response.text();
  return { status: response.status, json: text ? JSON.parse(text) : undefined };
}

/** An API token, raw headers (a browser's cookie and Origin), or nothing. */
type Credentials = string | null | Record<string, string>;
function headersFor(credentials: Credentials): Record<string, string> {
  if (credentials === null) return {};
  return typeof credentials === 'string' ? { authorization: `Bearer ${credentials}` } : credentials;
}

function terminalUrl(base: string, ws: SeededWorkspace): string {
  return `${base.replace(/^http/, 'ws')}/api/v1/workspaces/${ws.username}/${ws.workspaceName}/terminal`;
}

/** A protocol client like the browser's: parses with a headless xterm.js and acks from its write callbacks. */
class TestTerminal {
  readonly socket: WebSocket;
  readonly client = new ParsingClient(80, 24);
  readonly messages: ServerMessage[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  sessionId: string | undefined;
  text = '';
  received = 0;
  sequence = { lines: 0, breaks: [] as string[], last: -1, partial: '', on: false };
  readonly #decoder = new TextDecoder();

  private constructor(socket: WebSocket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    this.client.attachment = { ack: (bytes: number) => this.send({ type: 'ack', bytes }), unackedBytes: 0 } as unknown as TerminalAttachment;
    socket.on('message', (data: Buffer, isBinary: boolean) => this.#onMessage(isBinary ? new Uint8Array(data) : data.toString('utf8')));
  }

  /** Connects and attaches; resolves after `attached`, or after the close when the server refused. */
  static async open(base: string, token: Credentials, ws: SeededWorkspace, sessionId?: string, command?: string[]): Promise<TestTerminal> {
    const socket = new WebSocket(terminalUrl(base, ws), { headers: headersFor(token) });
    const term = new TestTerminal(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
    term.send({ type: 'attach', cols: 80, rows: 24, ...(sessionId ? { sessionId } : {}), ...(command ? { command, env: { PS1: PROMPT } } : {}) });
    await Promise.race([waitFor(() => term.sessionId !== undefined, OUTPUT_TIMEOUT_MS, '`attached`'), term.closed]);
    return term;
  }

  /** An attached-less socket for sending raw frames. */
  static async raw(base: string, token: string, ws: SeededWorkspace) {
    const socket = new WebSocket(terminalUrl(base, ws), { headers: { authorization: `Bearer ${token}` } });
    const closeCode = new Promise<number>((resolve) => socket.once('close', (code) => resolve(code)));
    await new Promise((resolve) => socket.once('open', resolve));
    return { send: (data: string) => socket.send(data), closeCode };
  }

  /** How the server refused an upgrade (status and error code), or undefined if it accepted. */
  static refusedUpgrade(base: string, token: Credentials, ws: SeededWorkspace): Promise<{ status: number; code?: string } | undefined> {
    return new Promise((resolve) => {
      const socket = new WebSocket(terminalUrl(base, ws), { headers: headersFor(token) });
      socket.once('open', () => {
        socket.close();
        resolve(undefined);
      });
      socket.once('error', () => {});
      socket.once('unexpected-response', (_request, response) => {
        let body = '';
        response.on('data', (chunk: Buffer) => (body += chunk.toString()));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, code: JSON.parse(body || '{}').error?.code }));
      });
    });
  }

  send(message: ClientMessage): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(encodeClientMessage(message));
  }

  type(data: string): void {
    this.send({ type: 'input', data: new TextEncoder().encode(data) });
  }

  /** Ends the session (not just this attachment). */
  close(): void {
    this.send({ type: 'close' });
  }

  errors(): string[] {
    return this.messages.flatMap((m) => (m.type === 'error' ? [m.code] : []));
  }

  trackSequence(): void {
    this.sequence.on = true;
  }

  async waitForText(needle: string, from = 0, timeoutMs = OUTPUT_TIMEOUT_MS): Promise<void> {
    await waitFor(() => this.text.indexOf(needle, Math.max(0, from)) >= 0, timeoutMs, `'${JSON.stringify(needle)}' in the output (last: ${JSON.stringify(this.text.slice(-200))})`);
  }

  async waitForScreen(needle: string): Promise<void> {
    const deadline = performance.now() + OUTPUT_TIMEOUT_MS;
    while (!(await this.client.screenLines()).some((line) => line.includes(needle))) {
      if (performance.now() > deadline) throw new Error(`Timed out waiting for '${needle}' on the screen.`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** The serialized screen once everything received is parsed and nothing has arrived for a moment. */
  async quietSerialize(): Promise<string> {
    let seen = -1;
    while (seen !== this.received) {
      seen = this.received;
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    return this.client.serialize();
  }

  #onMessage(data: string | Uint8Array): void {
    const message = decodeServerMessage(data);
    this.messages.push(message);
    if (message.type === 'attached') {
      this.sessionId = message.sessionId;
      this.client.attached(message);
      // the snapshot counts as text too, so waits also see what happened before the attach
      this.text += message.snapshot;
    } else if (message.type === 'output') {
      this.received += message.data.byteLength;
      const chunk = this.#decoder.decode(message.data, { stream: true });
      this.text += chunk;
      if (this.text.length > 1 << 20) this.text = this.text.slice(-(1 << 18));
      if (this.sequence.on) this.#checkSequence(chunk);
      this.client.output(message.data);
    } else if (message.type === 'resized') {
      this.client.resized(message.cols, message.rows);
    }
  }

  /** Every `Lnnnnnn` line must follow the previous one (mod the file's 80,000 lines). */
  #checkSequence(chunk: string): void {
    const s = this.sequence;
    const lines = (s.partial + chunk).split('\r\n');
    s.partial = lines.pop()!;
    for (const line of lines) {
      const match = /^L(\d{6})$/.exec(line);
      if (!match) continue;
      const n = Number(match[1]);
      if (s.last >= 0 && n !== (s.last + 1) % 80_000 && s.breaks.length < 10) s.breaks.push(`${s.last} -> ${n}`);
      s.last = n;
      s.lines++;
    }
  }
}
