import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { Gauge, Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { AGENT_CLOSE, AGENT_PROTOCOL, decodeFrame, encodeFrame, type AgentFrame } from '../../protocol/agent.ts';
import type { BuildLogEntry } from '../builds/log-sink.ts';
import { loadConfig } from '../config.ts';
import { openStore, type Store } from '../store/connect.ts';
import { systemClock } from '../store/time.ts';
import { seedWorkspace, type SeededWorkspace } from '../../test/support/workspace-seed.ts';
import { createAgentHub, type LocalAgentHub } from './hub.ts';
import { authenticateAgent, issueAgentToken, type AgentIdentity } from './tokens.ts';

/**
 * Everything here happens on loopback within a few heartbeats. An agent is dropped after three
 * heartbeats without a frame: at 250 ms that is 750 ms, more than a loaded CI machine stalls the
 * test process between a pong's arrival and its reading.
 */
const CONDITION_TIMEOUT_MS = 5_000;
const HEARTBEAT_MS = 250;

describe('agent hub', () => {
  let store: Store;
  let hub: LocalAgentHub;
  let server: WebSocketServer;
  let url: string;
  let gauge: Gauge;
  const logs: { buildId: string; entry: BuildLogEntry }[] = [];
  const pending: AgentIdentity[] = [];

  beforeAll(async () => {
    store = await openStore({ sqlitePath: ':memory:' });
    gauge = new Gauge({ name: 'agents', help: 'connected agents', registers: [new Registry()] });
    hub = createAgentHub({
      config: loadConfig({ logLevel: 'silent' }, {}),
      store,
      clock: systemClock,
      log: pino({ level: 'silent' }),
      buildLogs: { append: (buildId, entry) => logs.push({ buildId, entry }) },
      metrics: { agentsConnected: gauge },
      heartbeatMs: HEARTBEAT_MS,
    });
    // a bare websocket server in front of the hub: the routes' token check is tested end to end elsewhere
    server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    server.on('connection', (socket) => hub.accept(socket, pending.shift()!));
    await new Promise((resolve) => server.once('listening', resolve));
    url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await hub.close();
    server.close();
    await store.close();
  });

  async function seeded(name: string): Promise<{ ws: SeededWorkspace; identity: AgentIdentity }> {
    const ws = await seedWorkspace(store.db, { username: `u-${name}`, workspaceName: name });
    const token = await issueAgentToken(store.db, { workspaceId: ws.workspaceId, buildId: ws.buildId, manifest: {}, now: new Date() });
    return { ws, identity: (await authenticateAgent(store.db, token))! };
  }

  /** Connects as an agent, says hello and waits for welcome; answers pings only when asked to. */
  async function agent(identity: AgentIdentity, options: { answerPings: boolean }) {
    pending.push(identity);
    const socket = new WebSocket(url);
    const frames: AgentFrame[] = [];
    const closed = new Promise<number>((resolve) => socket.once('close', resolve));
    socket.on('message', (data: Buffer, isBinary: boolean) => {
      const frame = decodeFrame(isBinary ? new Uint8Array(data) : data.toString());
      frames.push(frame);
      if (frame.type === 'ping' && options.answerPings) socket.send(encodeFrame({ type: 'pong', id: frame.id }));
    });
    await new Promise((resolve) => socket.once('open', resolve));
    socket.send(encodeFrame({
      type: 'hello', protocol: AGENT_PROTOCOL, agentVersion: 'test', instance: crypto.randomUUID(),
      os: { platform: 'linux', arch: 'x64', release: '1', hostname: 'h' }, state: 'starting', startupBegun: false,
    }));
    await until(() => frames.some((f) => f.type === 'welcome'), 'welcome');
    return { socket, frames, closed, send: (frame: AgentFrame) => socket.send(encodeFrame(frame)) };
  }

  it('drops an agent that stops answering heartbeats and keeps one that answers', async () => {
    const silent = await seeded('silent');
    const lively = await seeded('lively');
    // the answering one first: the silent one's clock runs from its hello
    const chatty = await agent(lively.identity, { answerPings: true });
    const quiet = await agent(silent.identity, { answerPings: false });
    expect(await gaugeValue(gauge)).toBe(2);
    await quiet.closed;
    expect(hub.isConnected(silent.ws.workspaceId)).toBe(false);
    expect(hub.isConnected(lively.ws.workspaceId)).toBe(true);
    expect(await gaugeValue(gauge)).toBe(1);
    chatty.socket.close();
    await chatty.closed;
  });

  it('replaces an older connection of the same workspace with close code 4003', async () => {
    const { ws, identity } = await seeded('twice');
    const first = await agent(identity, { answerPings: true });
    const second = await agent(identity, { answerPings: true });
    expect(await first.closed).toBe(AGENT_CLOSE.replaced);
    expect(hub.isConnected(ws.workspaceId)).toBe(true);
    second.socket.close();
    await second.closed;
  });

  it('holds two agents of one workspace apart: neither replaces the other, each has its own state, and the service agent\'s loss is an event naming it', async () => {
    const { ws, identity: main } = await seeded('pair');
    const apiToken = await issueAgentToken(store.db, { workspaceId: ws.workspaceId, agent: 'api', buildId: ws.buildId, manifest: {}, now: new Date() });
    const api = (await authenticateAgent(store.db, apiToken))!;
    expect(api.agentName).toBe('api');
    const mainLink = await agent(main, { answerPings: true });
    const apiLink = await agent(api, { answerPings: true });
    const apiRef = { workspaceId: ws.workspaceId, agent: 'api' };
    expect(hub.isConnected(ws.workspaceId)).toBe(true);
    expect(hub.isConnected(apiRef)).toBe(true);

    const apiReady = hub.waitForReady(apiRef, ws.buildId, { timeoutMs: CONDITION_TIMEOUT_MS });
    apiLink.send({ type: 'lifecycle', state: 'ready' });
    await apiReady;
    expect(hub.stateOf(apiRef)?.state).toBe('ready');
    expect(hub.stateOf(ws.workspaceId)).toBeUndefined();

    apiLink.socket.close();
    await apiLink.closed;
    await until(() => !hub.isConnected(apiRef), 'the api agent gone');
    expect(hub.isConnected(ws.workspaceId)).toBe(true);
    const event = await untilValue(async () => store.db.selectFrom('workspace_events').selectAll()
      .where('workspace_id', '=', ws.workspaceId).where('kind', '=', 'agent_disconnected').executeTakeFirst(), 'the agent_disconnected event');
    expect(event.message).toMatch(/^The agent of service api disconnected/);
    expect(JSON.parse(event.detail_json)).toMatchObject({ agent: 'api' });
    const rows = await store.db.selectFrom('agents').select(['name', 'state', 'disconnected_at']).where('workspace_id', '=', ws.workspaceId).orderBy('name').execute();
    expect(rows).toEqual([
      { name: 'api', state: 'ready', disconnected_at: expect.any(String) },
      { name: 'main', state: null, disconnected_at: null },
    ]);
    mainLink.socket.close();
    await mainLink.closed;

    // a service's agent that never comes is named when the wait gives up
    await expect(hub.waitForReady({ workspaceId: ws.workspaceId, agent: 'db' }, ws.buildId, { timeoutMs: 50 })).rejects.toMatchObject({
      code: 'AGENT_READY_TIMEOUT',
      message: expect.stringMatching(/^The agent of service db did not become ready within 0 s\./),
    });
  });

  it('appends each log frame once, acks it, and resolves waitForReady after storing ready', async () => {
    const { ws, identity } = await seeded('logs');
    const link = await agent(identity, { answerPings: true });
    const ready = hub.waitForReady(ws.workspaceId, ws.buildId, { timeoutMs: CONDITION_TIMEOUT_MS });
    const log: AgentFrame = { type: 'log', seq: 1, script: 'setup', stream: 'stdout', lines: ['a', 'b'] };
    link.send(log);
    link.send(log); // resent after a reconnect: skipped
    link.send({ type: 'lifecycle', state: 'ready' });
    await ready;
    const row = await store.db.selectFrom('agents').select('state as agent_state').where('workspace_id', '=', ws.workspaceId).where('name', '=', 'main').executeTakeFirstOrThrow();
    expect(row.agent_state).toBe('ready');
    expect(logs.filter((l) => l.buildId === ws.buildId && l.entry.step === 'setup').map((l) => l.entry.line)).toEqual(['a', 'b']);
    await until(() => link.frames.filter((f) => f.type === 'log_ack').length === 2, 'two log acks');
    expect(link.frames.filter((f) => f.type === 'log_ack')).toEqual([{ type: 'log_ack', seq: 1 }, { type: 'log_ack', seq: 1 }]);
    // a later caller for the same build gets the answer at once
    await hub.waitForReady(ws.workspaceId, ws.buildId, { timeoutMs: 1 });
    link.socket.close();
    await link.closed;
  });

  it('rejects waitForReady with AGENT_READY_TIMEOUT and with AGENT_WAIT_CANCELED on abort', async () => {
    const { ws } = await seeded('never');
    await expect(hub.waitForReady(ws.workspaceId, ws.buildId, { timeoutMs: 20 })).rejects.toMatchObject({ code: 'AGENT_READY_TIMEOUT' });
    const controller = new AbortController();
    const waiting = hub.waitForReady(ws.workspaceId, ws.buildId, { timeoutMs: CONDITION_TIMEOUT_MS, signal: controller.signal });
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'AGENT_WAIT_CANCELED' });
  });

  it('answers AGENT_NOT_CONNECTED to exec when no agent is connected', async () => {
    const { ws } = await seeded('absent');
    await expect(hub.exec(ws.workspaceId, { command: ['true'] })).rejects.toMatchObject({ code: 'AGENT_NOT_CONNECTED' });
  });
});

async function gaugeValue(gauge: Gauge): Promise<number> {
  return (await gauge.get()).values[0]?.value ?? 0;
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + CONDITION_TIMEOUT_MS;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${CONDITION_TIMEOUT_MS} ms waiting for ${what}.`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function untilValue<T>(probe: () => Promise<T | undefined>, what: string): Promise<T> {
  const deadline = Date.now() + CONDITION_TIMEOUT_MS;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${CONDITION_TIMEOUT_MS} ms waiting for ${what}.`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
