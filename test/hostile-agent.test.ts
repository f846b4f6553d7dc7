import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { DenClient } from '../client/client.ts';
import { AGENT_CLOSE } from '../protocol/agent.ts';
import { createApiToken } from '../server/auth/api-tokens.ts';
import { MAX_INSTANCES_PER_WORKSPACE } from '../server/agents/log-sequences.ts';
import { issueAgentToken } from '../server/agents/tokens.ts';
import { DEFAULT_BUILD_LOG_LIMITS, LOG_CAP_STEP } from '../server/builds/log-cap.ts';
import { systemClock } from '../server/store/time.ts';
import { runDen, type DenResult } from './support/den-cli.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { idleDriver } from './support/idle-driver.ts';
import { storeDialects } from './support/postgres.ts';
import { seedWorkspace, type SeededWorkspace } from './support/workspace-seed.ts';

/**
 * An agent that lies: the agent token is readable by workspace code (/proc/<agent pid>/environ),
 * so these tests speak the real agent protocol over a real websocket, as such code could, and
 * check that it affects only its own workspace, within bounds.
 */

/** A fake agent's frames are answered (welcome, acks) well within this on a loaded machine. */
const FRAME_TIMEOUT_MS = 60_000;
const CLI_TIMEOUT_MS = 30_000;
/** how often a test looks again for a condition it waits for */
const POLL_MS = 20;

describe.each(storeDialects)('a hostile agent (%s)', (dialect) => {
  let server: TestServer;
  let apiToken: string;

  beforeAll(async () => {
    server = await startTestServer({ dialect, listen: true, startWorkers: false, driver: () => idleDriver });
  });
  afterAll(async () => {
    await server?.close();
  });

  const workspace = async (name: string) => {
    const ws = await seedWorkspace(server.store.db, { username: `u-${name}`, workspaceName: name });
    apiToken = (await createApiToken(server.store.db, systemClock, ws.userId, { name: 'test' })).token;
    const token = await issueAgentToken(server.store.db, { workspaceId: ws.workspaceId, buildId: ws.buildId, manifest: {}, now: new Date() });
    return { ...ws, token, client: new DenClient({ url: server.url!, token: apiToken }) };
  };

  /** Events are written after the connection is handled: the first non-empty list. */
  const eventsOnceAny = async (ws: { username: string; workspaceName: string; client: DenClient }) => {
    const deadline = Date.now() + FRAME_TIMEOUT_MS;
    for (;;) {
      const events = await ws.client.workspaces.events(ws.username, ws.workspaceName);
      if (events.events.length > 0 || Date.now() > deadline) return events;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  };

  it('fills a build log with 30,000 lines / 40 MB and the store keeps only its head, a cut marker and its tail', async () => {
    const ws = await workspace('flood');
    const agent = await FakeAgent.connect(server, ws.token, 'flooder');
    const LINES = 30_000;
    const line = (i: number) => `${String(i).padStart(6, '0')} ${'x'.repeat(1_400)}`;
    // Frames stay under the link's 1 MiB frame limit: 600 lines of 1.4 kB each.
    let sent = 0;
    for (let seq = 1; sent < LINES; seq++) {
      const count = Math.min(600, LINES - sent);
      agent.send({ type: 'log', seq, script: 'flood', stream: 'stdout', lines: Array.from({ length: count }, (_, i) => line(sent + i)) });
      sent += count;
      await agent.until((frame) => frame.type === 'log_ack' && frame.seq === seq);
    }
    agent.close();
    await server.den.builds.logs.flush();

    const size = await server.store.db.selectFrom('build_logs').where('build_id', '=', ws.buildId)
      .select((eb) => [eb.fn.countAll<number>().as('rows')]).executeTakeFirstOrThrow();
    const limits = DEFAULT_BUILD_LOG_LIMITS;
    expect(Number(size.rows)).toBeLessThanOrEqual(limits.headLines + limits.tailLines + 1);

    const lines = await ws.client.workspaces.logs(ws.username, ws.workspaceName, 1);
    const stored = lines.reduce((sum, row) => sum + Buffer.byteLength(row.line), 0);
    console.log(`40 MB of log frames: ${lines.length} rows, ${(stored / 1024 / 1024).toFixed(2)} MiB stored`);
    expect(stored).toBeLessThanOrEqual(limits.headBytes + limits.tailBytes + 1024);
    expect(lines[0].line).toBe(line(0));
    expect(lines.at(-1)!.line).toBe(line(LINES - 1));
    const markers = lines.filter((row) => row.step === LOG_CAP_STEP);
    expect(markers).toHaveLength(1);
    const kept = lines.length - 1;
    expect(markers[0].line).toMatch(new RegExp(`^den cut ${LINES - kept} lines \\(\\d+ bytes\\) here`));
    // head, marker, tail: the lines on either side of the marker are consecutive runs
    const at = lines.indexOf(markers[0]);
    const numbers = lines.filter((row) => row !== markers[0]).map((row) => Number(row.line.slice(0, 6)));
    expect(numbers.slice(0, at)).toEqual(Array.from({ length: at }, (_, i) => i));
    expect(numbers.slice(at)).toEqual(Array.from({ length: kept - at }, (_, i) => LINES - (kept - at) + i));
  });

  it('keeps the log sequence map bounded while an agent reconnects with a new instance id each time', async () => {
    const ws = await workspace('instances');
    const hub = server.den.agents;
    const before = hub.sizes().logSequences;
    for (let i = 0; i < 40; i++) {
      const agent = await FakeAgent.connect(server, ws.token, `instance-${i}`);
      agent.send({ type: 'log', seq: 1, script: 'x', stream: 'stdout', lines: [`from instance ${i}`] });
      await agent.until((frame) => frame.type === 'log_ack');
      agent.close();
    }
    expect(hub.sizes().logSequences - before).toBeLessThanOrEqual(MAX_INSTANCES_PER_WORKSPACE);
    await hub.shutdown(ws.workspaceId, { timeoutMs: FRAME_TIMEOUT_MS });
    expect(hub.sizes().logSequences).toBe(before);
  });

  it('writes the latest of a burst of lifecycle reports to the store, without a write queued per report', async () => {
    const ws = await workspace('burst');
    const hub = server.den.agents;
    const agent = await FakeAgent.connect(server, ws.token, 'bursty');
    for (let i = 0; i < 2_000; i++) agent.send({ type: 'lifecycle', state: i % 2 ? 'ready' : 'starting' });
    agent.send({ type: 'lifecycle', state: 'ready' });
    agent.send({ type: 'ping', id: 7 });
    await agent.until((frame) => frame.type === 'pong');
    await hub.waitForReady(ws.workspaceId, ws.buildId, { timeoutMs: FRAME_TIMEOUT_MS });
    const deadline = Date.now() + FRAME_TIMEOUT_MS;
    while (hub.sizes().persisting > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    const row = await server.store.db.selectFrom('agents').select('state as agent_state').where('workspace_id', '=', ws.workspaceId).where('name', '=', 'main').executeTakeFirstOrThrow();
    expect(row.agent_state).toBe('ready');
    agent.close();
  });

  it('cannot suppress another workspace\'s log lines by reusing its agent instance id', async () => {
    const victim = await workspace('victim');
    const attacker = await workspace('attacker');
    const hostile = await FakeAgent.connect(server, attacker.token, 'shared-instance');
    hostile.send({ type: 'log', seq: 1_000, script: 'x', stream: 'stdout', lines: ['attacker line'] });
    await hostile.until((frame) => frame.type === 'log_ack');
    hostile.close();

    const agent = await FakeAgent.connect(server, victim.token, 'shared-instance');
    agent.send({ type: 'log', seq: 1, script: 'setup', stream: 'stdout', lines: ['victim line'] });
    await agent.until((frame) => frame.type === 'log_ack');
    agent.close();
    await server.den.builds.logs.flush();
    const lines = await server.den.builds.logs.read(victim.buildId);
    expect(lines.map((row) => row.line)).toEqual(['victim line']);
  });

  it('records a second connection with the same token as an event the owner sees in the API and in `den events`', async () => {
    const ws = await workspace('twice');
    const first = await FakeAgent.connect(server, ws.token, 'real-agent');
    const second = await FakeAgent.connect(server, ws.token, 'impostor');
    expect(await first.closed).toBe(AGENT_CLOSE.replaced);

    const events = await eventsOnceAny(ws);
    expect(events.events).toEqual([
      expect.objectContaining({
        kind: 'agent_connection_replaced',
        message: expect.stringContaining('a different agent process'),
        detail: { agent: 'main', olderAddress: '127.0.0.1', newerAddress: '127.0.0.1', olderInstance: 'real-agent', newerInstance: 'impostor' },
      }),
    ]);

    const cli = await den(['events', `${ws.username}/${ws.workspaceName}`], { DEN_URL: server.url!, DEN_TOKEN: apiToken });
    expect(cli.code).toBe(0);
    expect(cli.stdout).toContain('agent_connection_replaced');
    expect(cli.stdout).toContain('replaced the open one from 127.0.0.1');
    const json = await den(['events', `${ws.username}/${ws.workspaceName}`, '--json'], { DEN_URL: server.url!, DEN_TOKEN: apiToken });
    expect(JSON.parse(json.stdout)).toEqual(events.events);
    second.close();
  });

  it('records one event per connection for an agent that sends many bad frames', async () => {
    const ws = await workspace('noisy');
    const agent = await FakeAgent.connect(server, ws.token, 'noisy');
    for (let i = 0; i < 20; i++) agent.sendRaw(`{"type":"open_ok","channel":${2 * i + 1},"window":1}`);
    agent.send({ type: 'ping', id: 1 });
    await agent.until((frame) => frame.type === 'pong');
    agent.close();
    const events = await eventsOnceAny(ws);
    expect(events.events.map((event) => event.kind)).toEqual(['agent_protocol_violation']);
  });
});

type Frame = { type: string; seq?: number; [key: string]: unknown };

/** The agent side of the link, driven by hand: hello, then whatever the test sends. */
class FakeAgent {
  private readonly frames: Frame[] = [];
  private readonly waiting = new Set<() => void>();
  private readonly socket: WebSocket;
  readonly closed: Promise<number>;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) return;
      this.frames.push(JSON.parse(data.toString()) as Frame);
      for (const wake of this.waiting) wake();
    });
    this.closed = new Promise((resolve) => socket.once('close', (code) => {
      resolve(code);
      for (const wake of this.waiting) wake();
    }));
  }

  static async connect(server: TestServer, token: string, instance: string): Promise<FakeAgent> {
    const socket = new WebSocket(`${server.url!.replace(/^http/, 'ws')}/api/v1/agent/connect`, { headers: { authorization: `Bearer ${token}` } });
    socket.on('error', () => {});
    const agent = new FakeAgent(socket);
    await new Promise((resolve, reject) => {
      socket.once('open', resolve);
      socket.once('close', (code) => reject(new Error(`the server closed the agent link (${code})`)));
    });
    agent.send({
      type: 'hello', protocol: { major: 1, minor: 0 }, agentVersion: 'hostile', instance,
      os: { platform: 'linux', arch: 'x64', release: '1', hostname: 'h' }, state: 'starting', startupBegun: false,
    });
    await agent.until((frame) => frame.type === 'welcome');
    return agent;
  }

  send(frame: Frame): void {
    this.socket.send(JSON.stringify(frame));
  }

  sendRaw(text: string): void {
    this.socket.send(text);
  }

  /** Resolves with the first received frame that matches (received before or after the call). */
  until(match: (frame: Frame) => boolean): Promise<Frame> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.frames.find(match);
        if (found) return done(() => resolve(found));
        if (this.socket.readyState === WebSocket.CLOSED) return done(() => reject(new Error('the agent link closed before the frame came')));
      };
      const timer = setTimeout(() => done(() => reject(new Error(`no matching frame within ${FRAME_TIMEOUT_MS} ms`))), FRAME_TIMEOUT_MS);
      const done = (settle: () => void) => {
        clearTimeout(timer);
        this.waiting.delete(check);
        settle();
      };
      this.waiting.add(check);
      check();
    });
  }

  close(): void {
    this.socket.close();
  }
}

/** Runs the real `den` CLI with the given environment and a home of its own. */
async function den(args: string[], env: Record<string, string>): Promise<DenResult> {
  const home = mkdtempSync(join(tmpdir(), 'den-events-cli-'));
  try {
    return await runDen(args, { PATH: process.env.PATH!, HOME: home, XDG_CONFIG_HOME: home, ...env }, CLI_TIMEOUT_MS);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}
