import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { openExec } from '../client/exec.ts';
import { AGENT_CLOSE, DEFAULT_CHANNEL_WINDOW, type AgentManifestInput } from '../protocol/agent.ts';
import { relayedBytes } from '../protocol/heap.ts';
import { createApiToken } from '../server/auth/api-tokens.ts';
import { agentCommand } from '../server/agents/bundle.ts';
import { issueAgentToken } from '../server/agents/tokens.ts';
import { systemClock } from '../server/store/time.ts';
import { idleDriver } from './support/idle-driver.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { createTestDatabase, storeDialects } from './support/postgres.ts';
import { seedWorkspace, type SeededWorkspace } from './support/workspace-seed.ts';

/** The agent starts, dials and runs two tiny scripts well within this on any machine. */
const READY_TIMEOUT_MS = 15_000;
/** After a server restart the agent redials with backoff capped at 5 s. */
const RECONNECT_TIMEOUT_MS = 20_000;
const EXEC_TIMEOUT_MS = 10_000;

describe.each(storeDialects)('agent link (%s)', (dialect) => {
  let server: TestServer;
  let ws: SeededWorkspace;
  let apiToken: string;
  const agents: ChildProcess[] = [];
  const dirs: string[] = [];

  beforeAll(async () => {
    server = await startTestServer({ dialect, listen: true, startWorkers: false, driver: () => idleDriver });
    ws = await seedWorkspace(server.store.db, { username: 'alice', workspaceName: 'demo' });
    apiToken = (await createApiToken(server.store.db, systemClock, ws.userId, { name: 'test' })).token;
  });
  afterAll(async () => {
    for (const child of agents) child.kill('SIGKILL');
    await server?.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  const launch = (token: string, url = server.url!) => {
    const home = mkdtempSync(join(tmpdir(), 'den-agent-home-'));
    dirs.push(home);
    const agent = startAgentProcess(url, token, home);
    agents.push(agent.child);
    return { ...agent, home };
  };

  it('runs startup scripts in order, streams their output into the build log and reports ready', async () => {
    const token = await issueAgentToken(server.store.db, { workspaceId: ws.workspaceId, buildId: ws.buildId, manifest: manifest(), now: new Date() });
    agentCommand(); // rebuilds a stale bundle now, so the measurement below is the agent's own start-up
    const started = performance.now();
    const agent = launch(token);
    await server.den.agents.waitForReady(ws.workspaceId, ws.buildId, { timeoutMs: READY_TIMEOUT_MS });
    console.log(`agent process start -> ready (${agentCommand().args[0].endsWith('.mjs') ? 'bundle' : 'ts source'}): ${Math.round(performance.now() - started)} ms`);

    const row = await server.store.db.selectFrom('agents').select('state as agent_state').where('workspace_id', '=', ws.workspaceId).where('name', '=', 'main').executeTakeFirstOrThrow();
    expect(row.agent_state).toBe('ready');
    const lines = await scriptLines(server, ws.buildId);
    expect(lines).toEqual(['first/stdout: one', 'first/stderr: to stderr', 'second/stdout: two', 'second/stdout: hi there']);
    expect(readFileSync(join(agent.home, 'runs'), 'utf8')).toBe('ran\n');
    expect(server.den.agents.isConnected(ws.workspaceId)).toBe(true);
  });

  it('runs a command with stdout, stderr and its exit code, and without the agent token in its environment', async () => {
    const result = await exec(server, apiToken, ws, ['sh', '-c', 'echo out; echo err >&2; printenv DEN_AGENT_TOKEN; echo "$GREETING"; exit 7']);
    expect(result).toEqual({ code: 7, stdout: 'out\nhi there\n', stderr: 'err\n' });
  });

  it('runs a command on a pty when asked for a tty', async () => {
    const stdout = new PassThrough();
    const chunks: Buffer[] = [];
    stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
    const code = await openExec({
      baseUrl: server.url!, token: apiToken, owner: ws.username, workspace: ws.workspaceName,
      command: ['sh', '-c', 'tty; stty size; echo "$TERM"'], tty: { cols: 99, rows: 33 },
      stdout, stderr: new PassThrough(), signal: AbortSignal.timeout(EXEC_TIMEOUT_MS),
    });
    expect(code).toBe(0);
    const text = Buffer.concat(chunks).toString();
    expect(text).toMatch(/\/dev\/pts\/\d+/);
    expect(text).toContain('33 99');
    expect(text).toContain('xterm-256color');
  });

  it('writes stdin to a pty as bytes: a character split across two frames arrives whole', async () => {
    const stdin = new PassThrough();
    const stdout = new PassThrough();
    let text = '';
    let sent = false;
    stdout.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      // the pty is raw once `ready` is printed: then the two halves of 'é' (c3 a9) go as two writes, two frames
      if (!sent && text.includes('ready')) {
        sent = true;
        stdin.write(Buffer.from([0xc3]));
        setTimeout(() => stdin.write(Buffer.from([0xa9])), 50);
      }
    });
    const code = await openExec({
      baseUrl: server.url!, token: apiToken, owner: ws.username, workspace: ws.workspaceName,
      command: ['sh', '-c', 'stty raw -echo; printf ready; head -c 2 | od -An -tx1'], tty: { cols: 80, rows: 24 },
      stdin, stdout, stderr: new PassThrough(), signal: AbortSignal.timeout(EXEC_TIMEOUT_MS),
    });
    expect(code).toBe(0);
    expect(text.replace(/\s+/g, ' ')).toContain('c3 a9');
  });

  it('holds pty input within the window while the program does not read it, and delivers all of it once it does', async () => {
    const scratch = mkdtempSync(join(tmpdir(), 'den-pty-window-'));
    dirs.push(scratch);
    const go = join(scratch, 'go');
    const total = 4 * DEFAULT_CHANNEL_WINDOW;
    const session = await server.den.agents.exec(ws.workspaceId, {
      command: ['sh', '-c', `stty raw -echo; printf ready; while [ ! -e '${go}' ]; do sleep 0.05; done; head -c ${total} | wc -c`],
      tty: true,
      ttySize: { cols: 80, rows: 24 },
    });
    let output = '';
    session.stdio.on('data', (chunk: Buffer) => (output += chunk.toString('latin1')));
    await waitFor(() => output.includes('ready'), EXEC_TIMEOUT_MS, 'the pty to be raw');
    // the program sleeps: the pty takes a few KiB, the agent holds what its window let through, the rest waits here
    let written = 0;
    const chunk = Buffer.alloc(64 * 1024, 'a');
    for (let sent = 0; sent < total; sent += chunk.byteLength) session.stdio.write(chunk, () => (written += chunk.byteLength));
    await new Promise((r) => setTimeout(r, 500));
    expect(written).toBeLessThan(total);
    expect(written).toBeLessThanOrEqual(DEFAULT_CHANNEL_WINDOW + 2 * chunk.byteLength);
    // the program reads: credit flows back as the pty takes the bytes, and every byte arrives
    writeFileSync(go, '');
    expect(await session.exit).toBe(0);
    expect(written).toBe(total);
    expect(output).toContain(`${total}`);
  });

  it('pipes stdin to the command until EOF', async () => {
    const input = Buffer.alloc(3 * 1024 * 1024, 'abcdefghij\n');
    const result = await exec(server, apiToken, ws, ['wc', '-c'], Readable.from([input.subarray(0, 1000), input.subarray(1000)]));
    expect(result).toEqual({ code: 0, stdout: `${input.byteLength}\n`, stderr: '' });
  });

  it('counts what it relays on the link both ways, which the young collections of ADR 0035 follow', async () => {
    const before = relayedBytes();
    const input = Buffer.alloc(2_000_000, 'x');
    const result = await exec(server, apiToken, ws, ['sh', '-c', 'cat >/dev/null; head -c 3000000 /dev/zero | tr "\\000" y'], Readable.from([input]));
    expect(result.code).toBe(0);
    expect(result.stdout).toBe('y'.repeat(3_000_000));
    // 2 MB of stdin sent and 3 MB of output received, plus frame headers: neither direction alone reaches 5 MB
    expect(relayedBytes() - before).toBeGreaterThanOrEqual(5_000_000);
  });

  it('prints the round trip of an exec of `true` through server and agent (a number, not an assertion)', async () => {
    const times: number[] = [];
    for (let i = 0; i < 10; i++) {
      const started = performance.now();
      expect((await exec(server, apiToken, ws, ['true'])).code).toBe(0);
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    console.log(`exec true round trip: median ${times[5].toFixed(1)} ms, min ${times[0].toFixed(1)} ms, max ${times[9].toFixed(1)} ms`);
  });

  it('runs the command in the given directory with the given environment on top of the manifest env', async () => {
    const result = await exec(server, apiToken, ws, ['sh', '-c', 'pwd; echo "$FOO $GREETING"'], undefined, { cwd: '/tmp', env: { FOO: 'bar' } });
    expect(result).toEqual({ code: 0, stdout: '/tmp\nbar hi there\n', stderr: '' });
  });

  it('answers 409 WORKSPACE_NOT_RUNNING to an exec on a stopped workspace', async () => {
    const stopped = await seedWorkspace(server.store.db, { username: 'alice', userId: ws.userId, workspaceName: 'asleep' });
    await server.store.db.updateTable('workspaces').set({ status: 'stopped' }).where('id', '=', stopped.workspaceId).execute();
    await expect(exec(server, apiToken, stopped, ['true'])).rejects.toMatchObject({
      code: 'WORKSPACE_NOT_RUNNING',
      status: 409,
      message: expect.stringContaining('den start asleep'),
    });
  });

  it('reports 128 + signal as the exit code of a killed command', async () => {
    const result = await exec(server, apiToken, ws, ['sh', '-c', 'kill -TERM $$']);
    expect(result.code).toBe(128 + 15);
  });

  it('answers EXEC_FAILED with a sentence when the command does not exist', async () => {
    await expect(exec(server, apiToken, ws, ['no-such-command-here'])).rejects.toMatchObject({
      code: 'EXEC_FAILED',
      message: expect.stringContaining("'no-such-command-here' was not found"),
    });
  });

  it('answers 404 WORKSPACE_NOT_FOUND to a user exec on another user\'s workspace', async () => {
    const bob = await seedWorkspace(server.store.db, { username: 'bob', workspaceName: 'other' });
    const bobToken = (await createApiToken(server.store.db, systemClock, bob.userId, { name: 'test' })).token;
    await expect(exec(server, bobToken, ws, ['true'])).rejects.toMatchObject({ code: 'WORKSPACE_NOT_FOUND', status: 404 });
  });

  it('answers AGENT_NOT_CONNECTED to an exec on a running workspace without an agent', async () => {
    const lonely = await seedWorkspace(server.store.db, { username: 'alice', userId: ws.userId, workspaceName: 'lonely' });
    await expect(exec(server, apiToken, lonely, ['true'])).rejects.toMatchObject({ code: 'AGENT_NOT_CONNECTED' });
  });

  it('keeps other channels flowing while one channel floods and is never read', async () => {
    const hub = server.den.agents;
    const flood = await hub.exec(ws.workspaceId, { command: ['head', '-c', String(32 * 1024 * 1024), '/dev/zero'] });
    // nobody reads the flood; a second command must still complete
    const other = await exec(server, apiToken, ws, ['echo', 'still here']);
    expect(other).toEqual({ code: 0, stdout: 'still here\n', stderr: '' });
    // the unread output held by the server is bounded by the channel window
    expect(flood.stdio.readableLength + (flood.stderr as Readable).readableLength).toBeLessThanOrEqual(DEFAULT_CHANNEL_WINDOW);
    let total = 0;
    const ended = new Promise((resolve) => flood.stdio.once('end', resolve));
    flood.stdio.on('data', (chunk: Buffer) => (total += chunk.byteLength));
    flood.stderr.resume();
    expect(await flood.exit).toBe(0);
    await ended;
    expect(total).toBe(32 * 1024 * 1024);
  });

  it('delivers large stdout and stderr at once byte for byte, to a reader that keeps pausing (reads copied into slabs, framed in place)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'den-exec-output-'));
    dirs.push(dir);
    const file = join(dir, 'patterned.bin');
    // every 4 bytes differ, so a frame overwritten or reordered in a slab shows
    const patterned = Buffer.alloc(6 * 1024 * 1024 + 123);
    for (let i = 0; i + 4 <= patterned.byteLength; i += 4) patterned.writeUInt32BE(i, i);
    writeFileSync(file, patterned);
    const running = await server.den.agents.exec(ws.workspaceId, { command: ['sh', '-c', `cat ${file} & cat ${file} >&2; wait`] });
    const collect = (stream: Readable) =>
      new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = [];
        stream.on('data', (chunk: Buffer) => {
          chunks.push(Buffer.from(chunk));
          // the credit runs out while paused: reads wait in the agent, split where the credit ends
          if (chunks.length % 7 === 0) {
            stream.pause();
            setTimeout(() => stream.resume(), 2);
          }
        });
        stream.once('end', () => resolve(Buffer.concat(chunks)));
      });
    const [stdout, stderr] = await Promise.all([collect(running.stdio), collect(running.stderr as Readable)]);
    expect(await running.exit).toBe(0);
    expect(stdout.equals(patterned)).toBe(true);
    expect(stderr.equals(patterned)).toBe(true);
  });

  it('reports start_error naming the failing blocking script and runs no later script', async () => {
    const broken = await seedWorkspace(server.store.db, { username: 'alice', userId: ws.userId, workspaceName: 'broken' });
    const token = await issueAgentToken(server.store.db, {
      workspaceId: broken.workspaceId,
      buildId: broken.buildId,
      manifest: { startupScripts: [{ name: 'fine', run: 'echo fine' }, { name: 'explodes', run: 'echo failing; exit 3' }, { name: 'never', run: 'echo never' }] },
      now: new Date(),
    });
    launch(token);
    await expect(server.den.agents.waitForReady(broken.workspaceId, broken.buildId, { timeoutMs: READY_TIMEOUT_MS })).rejects.toMatchObject({
      code: 'AGENT_START_FAILED',
      message: expect.stringContaining("Startup script 'explodes' exited with code 3"),
    });
    const row = await server.store.db.selectFrom('agents').select('state as agent_state').where('workspace_id', '=', broken.workspaceId).where('name', '=', 'main').executeTakeFirstOrThrow();
    expect(row.agent_state).toBe('start_error');
    const lines = await scriptLines(server, broken.buildId);
    expect(lines).toContain('explodes/stdout: failing');
    expect(lines.some((line) => line.startsWith('never/'))).toBe(false);
  });

  it('refuses an agent token for another workspace, and a revoked token, with 401 AGENT_UNAUTHORIZED', async () => {
    const other = await seedWorkspace(server.store.db, { username: 'alice', userId: ws.userId, workspaceName: 'victim' });
    const oldToken = await issueAgentToken(server.store.db, { workspaceId: other.workspaceId, buildId: other.buildId, manifest: {}, now: new Date() });
    const attacker = await seedWorkspace(server.store.db, { username: 'alice', userId: ws.userId, workspaceName: 'attacker' });
    const attackerToken = await issueAgentToken(server.store.db, { workspaceId: attacker.workspaceId, buildId: attacker.buildId, manifest: {}, now: new Date() });
    expect(await rawConnect(server, attackerToken, `?workspace=${other.workspaceId}`)).toMatchObject({ status: 401, code: 'AGENT_UNAUTHORIZED' });
    await issueAgentToken(server.store.db, { workspaceId: other.workspaceId, buildId: other.buildId, manifest: {}, now: new Date() });
    expect(await rawConnect(server, oldToken)).toMatchObject({ status: 401, code: 'AGENT_UNAUTHORIZED' });
    expect(await rawConnect(server, 'denagent_guessed')).toMatchObject({ status: 401, code: 'AGENT_UNAUTHORIZED' });
  });

  it('refuses an unknown protocol major with AGENT_PROTOCOL_UNSUPPORTED and survives garbage frames', async () => {
    const side = await seedWorkspace(server.store.db, { username: 'alice', userId: ws.userId, workspaceName: 'raw' });
    const token = await issueAgentToken(server.store.db, { workspaceId: side.workspaceId, buildId: side.buildId, manifest: {}, now: new Date() });
    const refused = await rawSession(server, token, (socket) => socket.send(JSON.stringify(hello(99))));
    expect(refused.close).toBe(AGENT_CLOSE.protocolUnsupported);
    expect(refused.frames[0]).toMatchObject({ type: 'error', code: 'AGENT_PROTOCOL_UNSUPPORTED' });

    const survived = await rawSession(server, token, (socket) => {
      socket.send(JSON.stringify(hello(1)));
      socket.once('message', () => {
        socket.send(Buffer.from([0x01, 0, 0])); // truncated header
        socket.send(Buffer.from([0x7f, 0, 0, 0, 1, 1, 2])); // unknown frame type
        socket.send('{"type":"lifecycle","state":"exploded"}');
        socket.send('not json at all');
        socket.send(JSON.stringify({ type: 'ping', id: 42 }));
      });
    }, (frame) => frame.type === 'pong');
    expect(survived.frames.map((frame) => frame.type)).toEqual(['welcome', 'pong']);
  });

  it('asks the agent to shut down gracefully: it reports shutting_down and off and exits 0', async () => {
    const gone = await seedWorkspace(server.store.db, { username: 'alice', userId: ws.userId, workspaceName: 'stopping' });
    const token = await issueAgentToken(server.store.db, { workspaceId: gone.workspaceId, buildId: gone.buildId, manifest: {}, now: new Date() });
    const agent = launch(token);
    await server.den.agents.waitForReady(gone.workspaceId, gone.buildId, { timeoutMs: READY_TIMEOUT_MS });
    await server.den.agents.shutdown(gone.workspaceId, { timeoutMs: READY_TIMEOUT_MS });
    expect(await agent.exited).toBe(0);
    const row = await server.store.db.selectFrom('agents').select('state as agent_state').where('workspace_id', '=', gone.workspaceId).where('name', '=', 'main').executeTakeFirstOrThrow();
    expect(row.agent_state).toBe('off');
  });
});

describe.each(storeDialects)('agent link across a server restart (%s)', (dialect) => {
  it('reconnects by itself without rerunning startup scripts, and exec works again', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'den-restart-'));
    const home = mkdtempSync(join(tmpdir(), 'den-agent-home-'));
    const pg = dialect === 'postgres' ? await createTestDatabase() : undefined;
    const options = { dialect, dataDir, databaseUrl: pg?.url, listen: true, startWorkers: false, driver: () => idleDriver } as const;
    let server = await startTestServer(options);
    let agent: ReturnType<typeof startAgentProcess> | undefined;
    try {
      const ws = await seedWorkspace(server.store.db, { username: 'carol', workspaceName: 'persist' });
      const apiToken = (await createApiToken(server.store.db, systemClock, ws.userId, { name: 'test' })).token;
      const token = await issueAgentToken(server.store.db, { workspaceId: ws.workspaceId, buildId: ws.buildId, manifest: manifest(), now: new Date() });
      agent = startAgentProcess(server.url!, token, home);
      await server.den.agents.waitForReady(ws.workspaceId, ws.buildId, { timeoutMs: READY_TIMEOUT_MS });
      expect((await exec(server, apiToken, ws, ['echo', 'before'])).stdout).toBe('before\n');

      const port = Number(new URL(server.url!).port);
      await server.app.close();
      await server.store.close();
      server = await startTestServer({ ...options, port });
      await waitFor(() => server.den.agents.isConnected(ws.workspaceId), RECONNECT_TIMEOUT_MS, 'the agent to reconnect');
      await server.den.agents.waitForReady(ws.workspaceId, ws.buildId, { timeoutMs: READY_TIMEOUT_MS });

      expect(await exec(server, apiToken, ws, ['echo', 'after'])).toEqual({ code: 0, stdout: 'after\n', stderr: '' });
      expect(readFileSync(join(home, 'runs'), 'utf8')).toBe('ran\n');
      const lines = await scriptLines(server, ws.buildId);
      expect(lines.filter((line) => line === 'first/stdout: one')).toHaveLength(1);
    } finally {
      agent?.child.kill('SIGKILL');
      await server.app.close();
      await server.store.close();
      await pg?.drop();
      rmSync(dataDir, { recursive: true, force: true });
      rmSync(home, { recursive: true, force: true });
    }
  });
});

function manifest(): AgentManifestInput {
  return {
    env: { GREETING: 'hi there' },
    startupScripts: [
      { name: 'first', run: 'echo one; echo to stderr >&2; echo ran >> "$HOME/runs"' },
      { name: 'second', run: 'echo two; echo "$GREETING"' },
    ],
  };
}

function startAgentProcess(url: string, token: string, home: string) {
  const { command, args } = agentCommand();
  const child = spawn(command, args, {
    env: { ...process.env, HOME: home, DEN_AGENT_URL: url, DEN_AGENT_TOKEN: token },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    log += chunk.toString();
    if (process.env.DEN_TEST_LOG) process.stderr.write(chunk);
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, exited, log: () => log };
}

async function exec(
  server: TestServer,
  token: string,
  ws: { username: string; workspaceName: string },
  command: string[],
  stdin?: Readable,
  extra: { env?: Record<string, string>; cwd?: string } = {},
) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (chunk: Buffer) => out.push(chunk));
  stderr.on('data', (chunk: Buffer) => err.push(chunk));
  const code = await openExec({
    baseUrl: server.url!, token, owner: ws.username, workspace: ws.workspaceName, command, stdin, stdout, stderr, ...extra,
    signal: AbortSignal.timeout(EXEC_TIMEOUT_MS),
  });
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

async function scriptLines(server: TestServer, buildId: string): Promise<string[]> {
  await server.den.builds.logs.flush();
  const rows = await server.store.db.selectFrom('build_logs').select(['step', 'stream', 'line']).where('build_id', '=', buildId).orderBy('id').execute();
  return rows.filter((row) => row.stream !== 'system').map((row) => `${row.step}/${row.stream}: ${row.line}`);
}

function hello(major: number) {
  return { type: 'hello', protocol: { major, minor: 0 }, agentVersion: 'test', instance: 'raw', os: { platform: 'linux', arch: 'x64', release: '1', hostname: 'h' }, state: 'starting', startupBegun: false };
}

function connectUrl(server: TestServer, query = ''): string {
  return `${server.url!.replace(/^http/, 'ws')}/api/v1/agent/connect${query}`;
}

/** Dials the agent endpoint and reports how the server refused the upgrade. */
function rawConnect(server: TestServer, token: string, query = ''): Promise<{ status: number; code?: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(connectUrl(server, query), { headers: { authorization: `Bearer ${token}` } });
    socket.on('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk));
      response.on('end', () => {
        socket.terminate();
        resolve({ status: response.statusCode ?? 0, code: JSON.parse(body).error?.code });
      });
    });
    socket.on('open', () => reject(new Error('the server accepted the connection')));
    socket.on('error', () => {});
  });
}

/** A hand-driven agent connection: collects text frames until `done` says so or the server closes. */
function rawSession(server: TestServer, token: string, script: (socket: WebSocket) => void, done?: (frame: { type: string }) => boolean) {
  return new Promise<{ frames: { type: string; code?: string }[]; close?: number }>((resolve, reject) => {
    const frames: { type: string; code?: string }[] = [];
    const socket = new WebSocket(connectUrl(server), { headers: { authorization: `Bearer ${token}` } });
    const timer = setTimeout(() => reject(new Error(`raw session timed out with frames ${JSON.stringify(frames)}`)), EXEC_TIMEOUT_MS);
    socket.on('open', () => script(socket));
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) return;
      const frame = JSON.parse(data.toString());
      frames.push(frame);
      if (done?.(frame)) {
        clearTimeout(timer);
        socket.close();
        resolve({ frames });
      }
    });
    socket.on('close', (code) => {
      clearTimeout(timer);
      resolve({ frames, close: code });
    });
    socket.on('error', () => {});
  });
}

async function waitFor(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}.`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

