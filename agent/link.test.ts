import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { AGENT_PROTOCOL, MAX_BULK_DATA_PAYLOAD, MAX_CONTROL_FRAME_BYTES, MAX_DATA_PAYLOAD, decodeFrame, encodeFrame, type AgentFrame } from '../protocol/agent.ts';
import { DIAL_MAX_PAYLOAD, connectUrl, socketBaseUrl } from './dial.ts';
import { MAX_UNCLAIMED } from './listen.ts';

/**
 * The agent process against a hand-driven server end of the link (our own protocol seam), to
 * check the agent's side of the rules: it survives bad frames, honours credit, enforces its own
 * window and stops for good when refused.
 */
const FRAME_TIMEOUT_MS = 10_000;
const home = mkdtempSync(join(tmpdir(), 'den-agent-link-'));
const servers: WebSocketServer[] = [];
const children: ReturnType<typeof spawn>[] = [];
const tcpServers: Server[] = [];
afterEach(() => {
  for (const server of tcpServers.splice(0)) server.close();
  for (const child of children.splice(0)) child.kill('SIGKILL');
  for (const server of servers.splice(0)) server.close();
});
afterAll(() => rmSync(home, { recursive: true, force: true }));

describe('agent link (agent side)', () => {
  it('dials the connect endpoint with the protocol frame limit', () => {
    expect(DIAL_MAX_PAYLOAD).toBe(MAX_CONTROL_FRAME_BYTES);
    expect(connectUrl('http://den.example:7080/')).toBe('ws://den.example:7080/api/v1/agent/connect');
    expect(connectUrl('https://den.example/base')).toBe('wss://den.example/base/api/v1/agent/connect');
    // DEN_AGENT_SOCKET: ws dials the socket and asks for the path after the colon
    expect(connectUrl(socketBaseUrl('/run/den/socket/agent.sock'))).toBe('ws+unix:///run/den/socket/agent.sock:/api/v1/agent/connect');
  });

  it('ignores garbage frames from the server, then works normally', async () => {
    const link = await connectAgent();
    link.socket.send(Buffer.from([1, 2]));
    link.socket.send('nope');
    link.socket.send('{"type":"welcome"}');
    link.socket.send(encodeFrame({ type: 'data', channel: 77, payload: new Uint8Array([1]) }));
    link.send(welcome());
    expect(await link.next((f) => f.type === 'lifecycle' && f.state === 'ready')).toBeTruthy();
    link.send({ type: 'ping', id: 5 });
    expect(await link.next((f) => f.type === 'pong')).toEqual({ type: 'pong', id: 5 });
  });

  it('answers open_error SYNC_SOURCE_MISSING with a sentence to a sync of a folder the workspace lacks', async () => {
    const link = await connectAgent();
    link.send(welcome());
    link.send({ type: 'open', channel: 1, window: 1000, spec: { kind: 'sync-source', root: '~/no-such-folder', exclude: [] } });
    const refusal = await link.next((f) => f.type === 'open_error');
    expect(refusal).toMatchObject({ channel: 1, code: 'SYNC_SOURCE_MISSING' });
    expect((refusal as { message: string }).message).toMatch(/no-such-folder does not exist/);
  });

  it('never sends more output than the credit the server granted', async () => {
    const link = await connectAgent();
    link.send(welcome());
    const total = 300_000;
    const step = 7_000;
    link.send({ type: 'open', channel: 1, window: step, spec: { kind: 'exec', command: ['head', '-c', String(total), '/dev/zero'] } });
    let granted = step;
    let received = 0;
    const close = await link.next((frame) => {
      if (frame.type === 'data' && frame.channel === 1) {
        received += frame.payload.byteLength;
        expect(received).toBeLessThanOrEqual(granted);
        if (received === granted) {
          granted += step;
          link.send({ type: 'window', channel: 1, bytes: step });
        }
      }
      return frame.type === 'close';
    });
    expect(close).toMatchObject({ type: 'close', channel: 1, exitCode: 0 });
    expect(received).toBe(total);
  });

  it('closes a channel whose stdin overruns the window the agent advertised', async () => {
    const link = await connectAgent();
    link.send(welcome());
    link.send({ type: 'open', channel: 1, window: 65_536, spec: { kind: 'exec', command: ['sleep', '5'] } });
    const ok = await link.next((f) => f.type === 'open_ok');
    const window = (ok as { window: number }).window;
    const chunk = new Uint8Array(60_000);
    for (let sent = 0; sent < window + 512 * 1024; sent += chunk.byteLength) link.send({ type: 'data', channel: 1, payload: chunk });
    expect(await link.next((f) => f.type === 'close')).toMatchObject({ channel: 1, error: { code: 'FLOW_CONTROL_VIOLATION' } });
  });

  it('relays a tcp channel both ways with half-close, under credit', async () => {
    const upper = createServer((socket) => {
      socket.on('data', (chunk) => socket.write(chunk.toString().toUpperCase()));
      socket.on('end', () => socket.end('bye'));
    });
    tcpServers.push(upper);
    await new Promise<void>((resolve) => upper.listen(0, '127.0.0.1', resolve));
    const link = await connectAgent();
    link.send(welcome());
    link.send({ type: 'open', channel: 1, window: 4, spec: { kind: 'tcp', host: '127.0.0.1', port: (upper.address() as AddressInfo).port } });
    expect(await link.next((f) => f.type === 'open_ok')).toMatchObject({ channel: 1 });
    link.send({ type: 'data', channel: 1, payload: new TextEncoder().encode('hello!') });
    link.send({ type: 'eof', channel: 1 });
    // a 4-byte window: the agent sends 4 bytes, then waits for our grant
    let text = '';
    let sinceGrant = 0;
    const end = await link.next((frame) => {
      if (frame.type === 'data') {
        text += new TextDecoder().decode(frame.payload);
        sinceGrant += frame.payload.byteLength;
        expect(sinceGrant).toBeLessThanOrEqual(4);
        if (sinceGrant === 4) {
          sinceGrant = 0;
          link.send({ type: 'window', channel: 1, bytes: 4 });
        }
      }
      return frame.type === 'eof';
    });
    expect(end).toMatchObject({ channel: 1 });
    expect(text).toBe('HELLO!bye');
    expect(await link.next((f) => f.type === 'close')).toMatchObject({ channel: 1 });
  });

  it('sends a tcp download in frames of up to the maxData the server declared (1.8), 64 KiB ones without it, the bytes intact', async () => {
    // a pattern that shifts with every byte: a read buffer reused before its bytes were framed would show
    const total = 6 * 1024 * 1024;
    const body = Buffer.alloc(total);
    for (let i = 0; i < total; i++) body[i] = (i * 7 + (i >> 12)) & 0xff;
    const source = createServer((socket) => socket.end(body));
    tcpServers.push(source);
    await new Promise<void>((resolve) => source.listen(0, '127.0.0.1', resolve));
    const port = (source.address() as AddressInfo).port;
    const link = await connectAgent();
    link.send(welcome());
    // downloads at once (two with bulk frames, reading into the agent's one bulk buffer), so the agent reads
    // each connection while the other's bytes may still wait for credit
    const download = (maxData: number | undefined) => ({ maxData, sizes: [] as number[], parts: [] as Uint8Array[], ended: false });
    const downloads = new Map([
      [1, download(100_000)],
      [3, download(MAX_BULK_DATA_PAYLOAD)],
      [5, download(undefined)],
    ]);
    for (const [channel, { maxData }] of downloads) {
      // a window of 3 frames, granted back as frames arrive: the agent waits for credit now and then, and reads what piled up meanwhile
      link.send({ type: 'open', channel, window: 3 * (maxData ?? MAX_DATA_PAYLOAD), spec: { kind: 'tcp', host: '127.0.0.1', port, ...(maxData ? { maxData } : {}) } });
    }
    await link.next((frame) => {
      const download = 'channel' in frame ? downloads.get(frame.channel) : undefined;
      if (download && frame.type === 'data') {
        download.sizes.push(frame.payload.byteLength);
        download.parts.push(frame.payload);
        link.send({ type: 'window', channel: frame.channel, bytes: frame.payload.byteLength });
      }
      if (download && frame.type === 'eof') download.ended = true;
      return [...downloads.values()].every((each) => each.ended);
    });
    for (const each of downloads.values()) expect(Buffer.concat(each.parts).equals(body)).toBe(true);
    const [capped, bulk, plain] = [downloads.get(1)!, downloads.get(3)!, downloads.get(5)!];
    expect(Math.max(...capped.sizes)).toBeLessThanOrEqual(100_000);
    expect(Math.max(...capped.sizes)).toBeGreaterThan(MAX_DATA_PAYLOAD);
    expect(Math.max(...bulk.sizes)).toBeGreaterThan(MAX_DATA_PAYLOAD);
    expect(Math.max(...plain.sizes)).toBeLessThanOrEqual(MAX_DATA_PAYLOAD);
  });

  it('connects a tcp channel to a unix socket, a relative path resolved in HOME', async () => {
    const path = join(home, 'app.sock');
    const echo = createServer((socket) => socket.pipe(socket));
    tcpServers.push(echo);
    await new Promise<void>((resolve) => echo.listen(path, resolve));
    const link = await connectAgent();
    link.send(welcome());
    link.send({ type: 'open', channel: 3, window: 1024, spec: { kind: 'tcp', host: '127.0.0.1', path: 'app.sock' } });
    expect(await link.next((f) => f.type === 'open_ok')).toMatchObject({ channel: 3 });
    link.send({ type: 'data', channel: 3, payload: new TextEncoder().encode('ping') });
    const data = await link.next((f) => f.type === 'data');
    expect(new TextDecoder().decode((data as { payload: Uint8Array }).payload)).toBe('ping');
    link.send({ type: 'close', channel: 3 });
    expect(await link.next((f) => f.type === 'close')).toMatchObject({ channel: 3 });
  });

  it('refuses a tcp channel to a port nothing listens on with TCP_CONNECT_FAILED, and goes on', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const link = await connectAgent();
    link.send(welcome());
    link.send({ type: 'open', channel: 5, window: 1024, spec: { kind: 'tcp', host: '127.0.0.1', port } });
    const refusal = await link.next((f) => f.type === 'open_error');
    expect(refusal).toMatchObject({ channel: 5, code: 'TCP_CONNECT_FAILED' });
    expect((refusal as { message: string }).message).toContain(`Nothing listens on 127.0.0.1:${port}`);
    link.send({ type: 'ping', id: 9 });
    expect(await link.next((f) => f.type === 'pong')).toEqual({ type: 'pong', id: 9 });
  });

  it('listens for a listen channel: announces each connection, hands a claimed one to a tcp channel, drops what it cannot hold, stops on close', async () => {
    const link = await connectAgent();
    link.send(welcome());
    link.send({ type: 'open', channel: 7, window: 256 * 1024, spec: { kind: 'listen', host: '127.0.0.1', port: 0 } });
    expect(await link.next((f) => f.type === 'open_ok')).toMatchObject({ channel: 7 });
    const records = listenRecords(link, 7);
    const { port } = (await records.next()) as { type: 'listening'; port: number };
    expect(port).toBeGreaterThan(0);

    const client = await dial(port);
    const accepted = (await records.next()) as { type: 'accepted'; connection: number; originAddress: string };
    expect(accepted).toMatchObject({ type: 'accepted', originAddress: '127.0.0.1' });
    link.send({ type: 'open', channel: 9, window: 1024, spec: { kind: 'tcp', host: '127.0.0.1', accepted: accepted.connection } });
    expect(await link.next((f) => f.type === 'open_ok' && f.channel === 9)).toBeTruthy();
    link.send({ type: 'data', channel: 9, payload: new TextEncoder().encode('to-client') });
    client.write('from-client');
    expect(await readSome(client)).toBe('to-client');
    const data = await link.next((f) => f.type === 'data' && f.channel === 9);
    expect(new TextDecoder().decode((data as { payload: Uint8Array }).payload)).toBe('from-client');
    // a connection claimed twice, or never announced: refused
    link.send({ type: 'open', channel: 11, window: 1024, spec: { kind: 'tcp', host: '127.0.0.1', accepted: accepted.connection } });
    expect(await link.next((f) => f.type === 'open_error' && f.channel === 11)).toMatchObject({ code: 'TCP_CONNECT_FAILED' });

    // past MAX_UNCLAIMED connections waiting for a claim, the agent closes new ones at once
    const waiting = await Promise.all(Array.from({ length: MAX_UNCLAIMED }, () => dial(port)));
    for (let announced = 0; announced < MAX_UNCLAIMED; announced++) expect((await records.next()).type).toBe('accepted');
    const extra = await dial(port);
    await new Promise((resolve) => extra.once('close', resolve));

    // closing the listen channel stops the listener and drops the unclaimed; the claimed connection goes on
    link.send({ type: 'close', channel: 7 });
    await Promise.all(waiting.map((socket) => new Promise((resolve) => (socket.destroyed ? resolve(undefined) : socket.once('close', resolve)))));
    await expect(dial(port)).rejects.toThrow(/ECONNREFUSED/);
    client.write('still-here');
    const after = await link.next((f) => f.type === 'data' && f.channel === 9);
    expect(new TextDecoder().decode((after as { payload: Uint8Array }).payload)).toBe('still-here');
  });

  it('refuses a listen channel on a port taken with TCP_LISTEN_FAILED and a sentence', async () => {
    const taken = createServer();
    tcpServers.push(taken);
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as AddressInfo).port;
    const link = await connectAgent();
    link.send(welcome());
    link.send({ type: 'open', channel: 13, window: 1024, spec: { kind: 'listen', host: '127.0.0.1', port } });
    const refusal = await link.next((f) => f.type === 'open_error');
    expect(refusal).toMatchObject({ channel: 13, code: 'TCP_LISTEN_FAILED' });
    expect((refusal as { message: string }).message).toContain(`already listens on 127.0.0.1:${port}`);
  });

  it('drops a silent connection after three heartbeat intervals and dials again, without rerunning startup', async () => {
    const link = await connectAgent();
    link.send({ ...welcome(), heartbeatMs: 100 } as AgentFrame);
    await link.next((f) => f.type === 'lifecycle' && f.state === 'ready');
    // the server now says nothing at all: the agent must notice and reconnect by itself
    const again = await new Promise<WebSocket>((resolve) => link.server.once('connection', resolve));
    const hello = await new Promise<AgentFrame>((resolve) => again.once('message', (data: Buffer) => resolve(decodeFrame(data.toString()))));
    expect(hello).toMatchObject({ type: 'hello', state: 'ready', startupBegun: true });
  });

  it('exits for good (code 2) when the server refuses its token', async () => {
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0, verifyClient: (_info, done) => done(false, 401, 'Unauthorized') });
    servers.push(server);
    await new Promise((resolve) => server.once('listening', resolve));
    const child = startAgent(server);
    expect(await new Promise((resolve) => child.once('exit', resolve))).toBe(2);
  });
});

function welcome(): AgentFrame {
  return {
    type: 'welcome',
    protocol: AGENT_PROTOCOL,
    workspace: { id: 'w', name: 'demo', ownerName: 'alice' },
    buildId: 'b',
    manifest: { env: {}, startupScripts: [], apps: [] },
    heartbeatMs: 15_000,
  };
}

function startAgent(server: WebSocketServer) {
  const { port } = server.address() as AddressInfo;
  const child = spawn(process.execPath, [join(import.meta.dirname, 'main.ts')], {
    env: { ...process.env, HOME: home, DEN_AGENT_URL: `http://127.0.0.1:${port}`, DEN_AGENT_TOKEN: 'denagent_test' },
    stdio: ['ignore', 'ignore', process.env.DEN_TEST_LOG ? 'inherit' : 'ignore'],
  });
  children.push(child);
  return child;
}

/** Starts a fake server, the agent, and waits for its hello. */
async function connectAgent() {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  servers.push(server);
  await new Promise((resolve) => server.once('listening', resolve));
  startAgent(server);
  const socket = await new Promise<WebSocket>((resolve) => server.once('connection', resolve));
  const frames: AgentFrame[] = [];
  let waiter: (() => void) | undefined;
  socket.on('message', (data: Buffer, isBinary: boolean) => {
    frames.push(decodeFrame(isBinary ? new Uint8Array(data) : data.toString()));
    waiter?.();
  });
  const link = {
    server,
    socket,
    send: (frame: AgentFrame) => socket.send(encodeFrame(frame)),
    /** resolves with the first frame (consumed in order) for which `match` is true */
    next(match: (frame: AgentFrame) => boolean): Promise<AgentFrame> {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching frame within ${FRAME_TIMEOUT_MS} ms`)), FRAME_TIMEOUT_MS);
        const check = () => {
          while (frames.length > 0) {
            const frame = frames.shift()!;
            if (match(frame)) {
              clearTimeout(timer);
              waiter = undefined;
              return resolve(frame);
            }
          }
        };
        waiter = check;
        check();
      });
    },
  };
  expect(await link.next((f) => f.type === 'hello')).toMatchObject({ type: 'hello', protocol: AGENT_PROTOCOL, state: 'starting', startupBegun: false });
  return link;
}

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

function readSome(socket: Socket): Promise<string> {
  return new Promise((resolve) => socket.once('data', (chunk: Buffer) => resolve(chunk.toString())));
}

/** The records of a listen channel's DATA, one per line, in order (granting the window back as a server does). */
function listenRecords(link: { next(match: (frame: AgentFrame) => boolean): Promise<AgentFrame>; send(frame: AgentFrame): void }, channel: number) {
  const queued: { type: string }[] = [];
  let partial = '';
  return {
    async next(): Promise<{ type: string }> {
      while (queued.length === 0) {
        const frame = (await link.next((f) => f.type === 'data' && f.channel === channel)) as { payload: Uint8Array };
        link.send({ type: 'window', channel, bytes: frame.payload.byteLength });
        partial += new TextDecoder().decode(frame.payload);
        const lines = partial.split('\n');
        partial = lines.pop()!;
        queued.push(...lines.map((line) => JSON.parse(line) as { type: string }));
      }
      return queued.shift()!;
    },
  };
}
