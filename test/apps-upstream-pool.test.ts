import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createApiToken } from '../server/auth/api-tokens.ts';
import { systemClock } from '../server/store/time.ts';
import { idleDriver } from './support/idle-driver.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { startRealAgent } from './support/real-agent.ts';
import { seedWorkspace } from './support/workspace-seed.ts';

/**
 * The app proxy's upstream keep-alive connections (server/apps/upstream-pool.ts), end to end with
 * the real den server and a real agent process, against an app written on raw TCP so the test
 * decides when it closes a connection: requests share one connection into the workspace; a
 * request the app drops on a reused connection is sent again on a new one when it has no body,
 * and answered 502 when it has one (den cannot send a consumed body twice).
 */

/** An HTTP/1.1 app on raw sockets: answers `conn=N req=K` with keep-alive; on a connection that already served one request, a path starting with /drop is answered by closing the connection. */
function rawApp(): { server: Server; connections: () => number } {
  let connections = 0;
  const server = createServer((socket: Socket) => {
    const id = ++connections;
    let served = 0;
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      for (;;) {
        const end = buffered.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buffered.subarray(0, end).toString('latin1');
        const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
        if (buffered.length < end + 4 + length) return;
        buffered = buffered.subarray(end + 4 + length);
        const path = head.split(' ')[1];
        if (served > 0 && path.startsWith('/drop')) return void socket.destroy();
        served++;
        const body = `conn=${id} req=${served}`;
        socket.write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
      }
    });
    socket.on('error', () => {});
  });
  return { server, connections: () => connections };
}

describe('app proxy upstream connections', () => {
  let server: TestServer;
  let agent: ChildProcess;
  let token: string;
  let app: ReturnType<typeof rawApp>;
  let dataDir: string;
  let home: string;
  let base: string;

  beforeAll(async () => {
    app = rawApp();
    await new Promise<void>((resolve) => app.server.listen(0, '127.0.0.1', resolve));
    dataDir = mkdtempSync(join(tmpdir(), 'den-apps-pool-'));
    home = mkdtempSync(join(tmpdir(), 'den-apps-pool-home-'));
    server = await startTestServer({ dataDir, listen: true, startWorkers: false, driver: () => idleDriver, config: { appResponseTimeoutSeconds: 5 } });
    const alice = await seedWorkspace(server.store.db, { username: 'alice', workspaceName: 'dev' });
    token = (await createApiToken(server.store.db, systemClock, alice.userId, { name: 't' })).token;
    agent = await startRealAgent(server, alice, home, {});
    base = `${server.url}/@alice/dev/ports/${(app.server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    agent?.kill('SIGKILL');
    await server?.close();
    app?.server.close();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  });

  // every test starts with one idle connection into the workspace (a request leaves it there)
  let connectionsBefore = 0;
  beforeEach(async () => {
    await fetch(`${base}/drop-idle`, { headers: { authorization: `Bearer ${token}` } }).then((response) => response.text());
    connectionsBefore = app.connections();
  });

  const get = async (path: string, init: RequestInit = {}) => {
    const response = await fetch(`${base}${path}`, { ...init, headers: { authorization: `Bearer ${token}` } });
    return { status: response.status, body: await response.text() };
  };

  it('sends one request after another over one connection into the workspace', async () => {
    const bodies: string[] = [];
    for (let i = 0; i < 10; i++) {
      const { status, body } = await get(`/n${i}`);
      expect(status).toBe(200);
      bodies.push(body);
    }
    // all ten on the connection the beforeEach's request left idle: no new connection to the app
    expect(new Set(bodies.map((body) => body.split(' ')[0])).size).toBe(1);
    expect(app.connections()).toBe(connectionsBefore);
    expect(bodies.at(-1)).toMatch(/req=11$/);
  });

  it('sends a GET the app dropped on a reused connection once more on a new one', async () => {
    const first = await get('/n');
    expect(first.status).toBe(200);
    const dropped = await get('/drop');
    expect(dropped.status).toBe(200);
    // answered as the first request of another connection
    expect(dropped.body).toMatch(/req=1$/);
    expect(dropped.body.split(' ')[0]).not.toBe(first.body.split(' ')[0]);
  });

  it('answers 502 APP_UNREACHABLE for a POST with a body the app dropped on a reused connection (it is not sent twice)', async () => {
    expect((await get('/n')).status).toBe(200);
    const before = app.connections();
    const response = await fetch(`${base}/drop`, { method: 'POST', body: 'once only', headers: { authorization: `Bearer ${token}` } });
    expect(response.status).toBe(502);
    expect(await response.text()).toContain('APP_UNREACHABLE');
    expect(app.connections()).toBe(before);
  });
});
