import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket, type WebSocketServer } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiToken } from '../server/auth/api-tokens.ts';
import { createSession, SESSION_COOKIE } from '../server/auth/sessions.ts';
import { systemClock } from '../server/store/time.ts';
import { idleDriver } from './support/idle-driver.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { startRealAgent } from './support/real-agent.ts';
import { runDen } from './support/den-cli.ts';
import { echoApp, sizedBody } from './support/echo-app.ts';
import { seedWorkspace, type SeededWorkspace } from './support/workspace-seed.ts';

/**
 * The path-mode app proxy end to end: the real den server and a real agent process, an app (an
 * HTTP + websocket server on loopback, where the unsandboxed agent reaches it) that echoes what it
 * receives, opened at /@alice/dev/ports/PORT/ as alice, bob and nobody.
 */

const STREAM_TIMEOUT_MS = 15_000;
/** larger than every buffer between the app and the client (channel windows, socket buffers) */
const LARGE_BYTES = 64 * 1024 * 1024;
/** the bad-input answer: far more than den may hold for one request */
const HUGE_BYTES = 1024 * 1024 * 1024;
const HUGE_READ_BYTES = 8 * 1024 * 1024;
/**
 * What may be on its way between the app and a client that stopped reading: the channel's
 * window (2 MiB), socket buffers on each hop (app -> agent, agent -> den, den -> client), a few
 * MiB each; far below the 1 GiB a den that buffered the answer would take.
 */
const HUGE_IN_FLIGHT_BYTES = 64 * 1024 * 1024;
/** the app counts as held back once it has written nothing for this long */
const STALL_MS = 1_000;

interface Ctx {
  server: TestServer;
  alice: SeededWorkspace;
  aliceCookie: string;
  aliceToken: string;
  bobToken: string;
  agent: ChildProcess;
  appPort: number;
  freePort: number;
  home: string;
}

describe('app proxy in path mode', () => {
  const ctx = {} as Ctx;
  let app: Server;
  let wss: WebSocketServer;
  let dataDir: string;

  beforeAll(async () => {
    ({ app, wss } = echoApp(LARGE_BYTES));
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    ctx.appPort = (app.address() as AddressInfo).port;
    ctx.freePort = await freeLoopbackPort();

    dataDir = mkdtempSync(join(tmpdir(), 'den-apps-'));
    ctx.home = mkdtempSync(join(tmpdir(), 'den-apps-home-'));
    ctx.server = await startTestServer({ dataDir, listen: true, startWorkers: false, driver: () => idleDriver, config: { appResponseTimeoutSeconds: 1 } });
    const db = ctx.server.store.db;
    ctx.alice = await seedWorkspace(db, { username: 'alice', workspaceName: 'dev' });
    const { template_version_id: versionId } = await db.selectFrom('workspaces').select('template_version_id').where('id', '=', ctx.alice.workspaceId).executeTakeFirstOrThrow();
    await db.updateTable('template_versions').set({ spec_json: JSON.stringify({ workspace: { apps: [{ name: 'web', port: ctx.appPort }] } }) }).where('id', '=', versionId).execute();
    const bob = await seedWorkspace(db, { username: 'bob', workspaceName: 'mine', role: 'owner' });
    ctx.aliceToken = (await createApiToken(db, systemClock, ctx.alice.userId, { name: 't' })).token;
    ctx.bobToken = (await createApiToken(db, systemClock, bob.userId, { name: 't' })).token;
    ctx.aliceCookie = `${SESSION_COOKIE}=${(await createSession(db, systemClock, ctx.alice.userId, 1)).cookieValue}`;
    ctx.agent = await startRealAgent(ctx.server, ctx.alice, ctx.home, {});
  });

  afterAll(async () => {
    ctx.agent?.kill('SIGKILL');
    await ctx.server?.close();
    wss?.close();
    app?.closeAllConnections();
    app?.close();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(ctx.home, { recursive: true, force: true });
  });

  const base = () => `${ctx.server.url}/@alice/dev/ports/${ctx.appPort}`;

  it('forwards a request with the prefix taken off and den\'s cookie and token taken out', async () => {
    const response = await fetch(`${base()}/echo?q=1`, { headers: { cookie: `theme=dark; ${ctx.aliceCookie}; app_session=xyz`, 'x-forwarded-for': '6.6.6.6' } });
    expect(response.status).toBe(200);
    expect(response.headers.getSetCookie()).toEqual(['a=1; Path=/', 'b=2; Path=/']);
    const echoed = (await response.json()) as { url: string; headers: IncomingHttpHeaders };
    expect(echoed.url).toBe('/echo?q=1');
    expect(echoed.headers.cookie).toBe('theme=dark; app_session=xyz');
    expect(echoed.headers.host).toBe(`localhost:${ctx.appPort}`);
    expect(echoed.headers['x-forwarded-host']).toBe(new URL(ctx.server.url!).host);
    expect(echoed.headers['x-forwarded-proto']).toBe('http');
    expect(echoed.headers['x-forwarded-prefix']).toBe(`/@alice/dev/ports/${ctx.appPort}`);
    // no trusted proxy is configured: the client's own X-Forwarded-For is not believed
    expect(echoed.headers['x-forwarded-for']).toBe('127.0.0.1');

    const withToken = await fetch(`${base()}/echo`, { headers: { authorization: `Bearer ${ctx.aliceToken}` } });
    expect(withToken.status).toBe(200);
    const tokenEcho = (await withToken.json()) as { headers: IncomingHttpHeaders };
    expect(tokenEcho.headers.authorization).toBeUndefined();
    expect(JSON.stringify(tokenEcho.headers)).not.toContain(ctx.aliceToken);
  });

  it('refuses anonymous callers (401), another user (404) and a den owner who is not the workspace\'s (403)', async () => {
    expect((await fetch(`${base()}/echo`)).status).toBe(401);
    const bob = await fetch(`${base()}/echo`, { headers: { authorization: `Bearer ${ctx.bobToken}` } });
    // bob has the den owner role: he may see the workspace, but not run its code in den's origin
    expect(bob.status).toBe(403);
    expect(await bob.json()).toMatchObject({ error: { code: 'FORBIDDEN' } });
  });

  it('keeps a client connection alive across requests', async () => {
    const agent = new (await import('node:http')).Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set<unknown>();
    for (let i = 0; i < 3; i++) {
      const { status, socket } = await new Promise<{ status: number; socket: unknown }>((resolve, reject) => {
        const req = httpRequest(`${base()}/echo`, { agent, headers: { cookie: ctx.aliceCookie } }, (res) => {
          res.resume();
          res.on('end', () => resolve({ status: res.statusCode!, socket: req.socket }));
        });
        req.on('error', reject);
        req.end();
      });
      expect(status).toBe(200);
      sockets.add(socket);
    }
    expect(sockets.size).toBe(1);
    agent.destroy();
  });

  it('streams a large upload and a large download both ways', async () => {
    const chunk = Buffer.alloc(1024 * 1024, 97);
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        controller.enqueue(chunk);
        if (++pulled === 32) controller.close();
      },
    });
    let pulled = 0;
    const upload = await fetch(`${base()}/count`, { method: 'POST', body, duplex: 'half', headers: { cookie: ctx.aliceCookie, 'content-type': 'application/octet-stream' } } as RequestInit);
    expect(await upload.text()).toBe(String(32 * chunk.length));

    const download = await fetch(`${base()}/large`, { headers: { cookie: ctx.aliceCookie } });
    let received = 0;
    for await (const part of download.body!) received += part.byteLength;
    expect(received).toBe(LARGE_BYTES);
  }, 60_000);

  it('sends a large body with a Content-Length straight from the app\'s connection (ADR 0033), intact; the client connection goes on; a body the app cuts short cuts the response', async () => {
    const agent = new (await import('node:http')).Agent({ keepAlive: true, maxSockets: 1 });
    const get = (path: string) =>
      new Promise<{ status: number; body: Buffer; socket: unknown }>((resolve, reject) => {
        const req = httpRequest(`${base()}${path}`, { agent, headers: { cookie: ctx.aliceCookie } }, (res) => {
          const parts: Buffer[] = [];
          res.on('data', (part: Buffer) => parts.push(part));
          res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(parts), socket: req.socket }));
          res.on('error', reject);
        });
        req.on('error', reject);
        req.end();
      });
    const size = 3 * 1024 * 1024 + 17;
    const first = await get(`/sized?bytes=${size}`);
    expect(first.status).toBe(200);
    expect(first.body.equals(sizedBody(size))).toBe(true);
    // the same client connection carries the next request, and den's next connection to the app works
    const next = await get('/echo');
    expect(next.status).toBe(200);
    expect(next.socket).toBe(first.socket);
    const again = await get(`/sized?bytes=${size}`);
    expect(again.body.equals(sizedBody(size))).toBe(true);
    await expect(get(`/sized?bytes=${size}&cut=${1024 * 1024}`)).rejects.toThrow(/aborted|socket hang up|ECONNRESET/);
    agent.destroy();
  }, 60_000);

  it('streams server-sent events as they are sent', async () => {
    const response = await fetch(`${base()}/events`, { headers: { cookie: ctx.aliceCookie } });
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    const reader = response.body!.getReader();
    let text = '';
    while (!text.includes('tick 3')) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(text).toContain('data: tick 1\n\n');
  }, STREAM_TIMEOUT_MS);

  it('proxies a websocket, with den\'s own Origin rewritten to the app\'s and the session cookie taken out', async () => {
    const origin = new URL(ctx.server.url!).origin;
    const socket = new WebSocket(`${base().replace('http', 'ws')}/ws?x=1`, { headers: { cookie: `${ctx.aliceCookie}; mine=1`, origin } });
    const messages: string[] = [];
    socket.on('message', (data) => messages.push(String(data)));
    await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
    socket.send('hello');
    await waitFor(() => messages.length >= 2);
    expect(JSON.parse(messages[0])).toEqual({ origin: `http://localhost:${ctx.appPort}`, cookie: 'mine=1', url: '/ws?x=1' });
    expect(messages[1]).toBe('echo:hello');
    socket.close();
  });

  it('answers 502 TCP_CONNECT_FAILED for a port nothing listens on, 504 APP_TIMEOUT for an app that never answers', async () => {
    const closed = await fetch(`${ctx.server.url}/@alice/dev/ports/${ctx.freePort}/`, { headers: { cookie: ctx.aliceCookie } });
    expect(closed.status).toBe(502);
    expect(await closed.json()).toMatchObject({ error: { code: 'TCP_CONNECT_FAILED' } });
    expect((await fetch(`${ctx.server.url}/@alice/dev/ports/70000/`, { headers: { cookie: ctx.aliceCookie } })).status).toBe(400);
    const hung = await fetch(`${base()}/hang`, { headers: { cookie: ctx.aliceCookie } });
    expect(hung.status).toBe(504);
    expect(await hung.text()).toContain('APP_TIMEOUT');
    // den goes on: the next request is answered
    expect((await fetch(`${base()}/echo`, { headers: { cookie: ctx.aliceCookie } })).status).toBe(200);
  });

  it('reads a 1 GiB answer only as fast as the client does, chunked and with a Content-Length, and goes on once the client leaves', async () => {
    const huge = hugeApp();
    await new Promise<void>((resolve) => huge.app.listen(0, '127.0.0.1', resolve));
    const hugePort = (huge.app.address() as AddressInfo).port;
    try {
      for (const path of ['/chunked', '/length']) {
        const request = httpRequest(`${ctx.server.url}/@alice/dev/ports/${hugePort}${path}`, { headers: { cookie: ctx.aliceCookie } });
        const response = await new Promise<IncomingMessage>((resolve, reject) => request.on('response', resolve).on('error', reject).end());
        expect(response.statusCode, path).toBe(200);
        // the client reads 8 MiB, then stops reading
        let received = 0;
        await new Promise<void>((resolve) => {
          response.on('data', (part: Buffer) => {
            received += part.length;
            if (received >= HUGE_READ_BYTES) {
              response.pause();
              resolve();
            }
          });
        });
        // the app is held back: it stops writing (a den that buffered the answer would take it all, at once)
        await waitForStall(() => huge.written, path);
        expect(huge.written - received, path).toBeLessThan(HUGE_IN_FLIGHT_BYTES);
        // the client leaves: den lets go of the app's answer, and the next request is answered
        const closed = new Promise((resolve) => huge.closed.once('close', resolve));
        request.destroy();
        await closed;
        expect((await fetch(`${base()}/echo`, { headers: { cookie: ctx.aliceCookie } })).status, path).toBe(200);
        huge.written = 0;
      }
    } finally {
      huge.app.closeAllConnections();
      huge.app.close();
    }
  }, 60_000);

  it('opens an app the template declares by its name, and redirects the bare prefix to the one with a slash', async () => {
    const echoed = await fetch(`${ctx.server.url}/@alice/dev/apps/web/echo`, { headers: { cookie: ctx.aliceCookie } });
    expect(((await echoed.json()) as { url: string }).url).toBe('/echo');
    const missing = await fetch(`${ctx.server.url}/@alice/dev/apps/nope/`, { headers: { cookie: ctx.aliceCookie } });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ error: { code: 'APP_NOT_FOUND' } });
    const bare = await fetch(`${ctx.server.url}/@alice/dev/apps/web?x=1`, { headers: { cookie: ctx.aliceCookie }, redirect: 'manual' });
    expect(bare.status).toBe(308);
    expect(bare.headers.get('location')).toBe('/@alice/dev/apps/web/?x=1');
  });

  it('lists the template\'s apps and a port that starts listening after the agent did, with their URLs (API, `den ports` and `den show`)', async () => {
    const late = createServer((_req, res) => res.end('late'));
    await new Promise<void>((resolve) => late.listen(0, '127.0.0.1', resolve));
    const latePort = (late.address() as AddressInfo).port;
    try {
      const response = await fetch(`${ctx.server.url}/api/v1/workspaces/alice/dev/ports`, { headers: { authorization: `Bearer ${ctx.aliceToken}` } });
      expect(response.status).toBe(200);
      const listing = (await response.json()) as { apps: unknown[]; ports: { port: number; address: string; url: string; app?: string }[]; detected: boolean };
      expect(listing.detected).toBe(true);
      expect(listing.apps).toEqual([{ name: 'web', port: ctx.appPort, url: `${ctx.server.url}/@alice/dev/apps/web/`, share: 'owner' }]);
      expect(listing.ports).toContainEqual({ port: ctx.appPort, address: '127.0.0.1', url: `${base()}/`, app: 'web', share: 'owner' });
      expect(listing.ports).toContainEqual({ port: latePort, address: '127.0.0.1', url: `${ctx.server.url}/@alice/dev/ports/${latePort}/`, share: 'owner' });
      // and the URL it gives opens the port
      expect(await (await fetch(`${ctx.server.url}/@alice/dev/ports/${latePort}/`, { headers: { cookie: ctx.aliceCookie } })).text()).toBe('late');

      const cli = await runDen(['ports', 'dev'], { PATH: process.env.PATH ?? '', HOME: ctx.home, XDG_CONFIG_HOME: join(ctx.home, 'cli-config'), DEN_URL: ctx.server.url!, DEN_TOKEN: ctx.aliceToken }, STREAM_TIMEOUT_MS);
      expect(cli.stderr).toBe('');
      expect(cli.code).toBe(0);
      expect(cli.stdout).toContain(`${ctx.server.url}/@alice/dev/apps/web/`);
      expect(cli.stdout).toContain(`${ctx.server.url}/@alice/dev/ports/${latePort}/`);
      // `den show` names it too, beside the app (which is not listed again as a port)
      const shown = await runDen(['show', 'dev'], { PATH: process.env.PATH ?? '', HOME: ctx.home, XDG_CONFIG_HOME: join(ctx.home, 'cli-config'), DEN_URL: ctx.server.url!, DEN_TOKEN: ctx.aliceToken }, STREAM_TIMEOUT_MS);
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.stdout).toContain(`\n  ${latePort}  ${ctx.server.url}/@alice/dev/ports/${latePort}/  shared with owner\n`);
      expect(shown.stdout).toContain(`\n  web  ${ctx.server.url}/@alice/dev/apps/web/  port ${ctx.appPort}, shared with owner\n`);
      expect(shown.stdout).not.toContain(`\n  ${ctx.appPort}  `);
    } finally {
      late.close();
    }
  });

  it('refuses a share level above the template\'s maxShare (owner by default) with 403 SHARE_NOT_ALLOWED', async () => {
    const response = await fetch(`${ctx.server.url}/api/v1/workspaces/alice/dev/shares/web`, { method: 'PUT', headers: { authorization: `Bearer ${ctx.aliceToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ level: 'public' }) });
    expect(response.status).toBe(403);
    expect(await response.json()).toMatchObject({ error: { code: 'SHARE_NOT_ALLOWED' } });
    const unknown = await fetch(`${ctx.server.url}/api/v1/workspaces/alice/dev/shares/nope`, { method: 'PUT', headers: { authorization: `Bearer ${ctx.aliceToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ level: 'owner' }) });
    expect(await unknown.json()).toMatchObject({ error: { code: 'APP_NOT_FOUND' } });
  });

  it('refuses a hostile Host header and a request with both Content-Length and Transfer-Encoding', async () => {
    const { port } = new URL(ctx.server.url!);
    const hostile = await rawExchange(Number(port), `GET /@alice/dev/ports/${ctx.appPort}/echo HTTP/1.1\r\nHost: evil.example/@x\r\nCookie: ${ctx.aliceCookie}\r\nConnection: close\r\n\r\n`);
    expect(hostile).toMatch(/^HTTP\/1\.1 400/);
    const smuggled = await rawExchange(Number(port), `POST /@alice/dev/ports/${ctx.appPort}/count HTTP/1.1\r\nHost: localhost\r\nCookie: ${ctx.aliceCookie}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /echo HTTP/1.1\r\n\r\n`);
    expect(smuggled).toMatch(/^HTTP\/1\.1 400/);
  });
});

/** An app that answers /chunked and /length with 1 GiB (honouring backpressure), counting what it wrote; `closed` says when an answer's connection closes. */
function hugeApp(): { app: Server; written: number; closed: EventEmitter } {
  const chunk = Buffer.alloc(1024 * 1024, 121);
  const huge = { app: undefined as unknown as Server, written: 0, closed: new EventEmitter() };
  huge.app = createServer((req, res) => {
    res.on('close', () => huge.closed.emit('close'));
    if (req.url === '/length') res.writeHead(200, { 'content-length': HUGE_BYTES, 'content-type': 'application/octet-stream' });
    const more = () => {
      while (huge.written < HUGE_BYTES && !res.destroyed) {
        huge.written += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', more);
      }
      res.end();
    };
    more();
  });
  return huge;
}

/** Waits until `written` has not grown for STALL_MS: the writer is held back by the reader. */
async function waitForStall(written: () => number, what: string): Promise<void> {
  const deadline = Date.now() + STREAM_TIMEOUT_MS;
  let last = written();
  let since = Date.now();
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    if (written() !== last) {
      last = written();
      since = Date.now();
    } else if (Date.now() - since >= STALL_MS) {
      return;
    }
    if (Date.now() > deadline) throw new Error(`${what}: the app never stopped writing (${last} bytes written)`);
  }
}

async function waitFor(condition: () => boolean, timeoutMs = STREAM_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function rawExchange(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(text));
    let answer = '';
    socket.on('data', (data) => (answer += data.toString('latin1')));
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
  });
}
