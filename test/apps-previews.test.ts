import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket, type WebSocketServer } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkspacePortsDto } from '../protocol/apps.ts';
import { createApiToken } from '../server/auth/api-tokens.ts';
import { createSession, SESSION_COOKIE } from '../server/auth/sessions.ts';
import type { RuntimeDriver } from '../server/runtimes/driver.ts';
import { systemClock } from '../server/store/time.ts';
import { runDen } from './support/den-cli.ts';
import { echoApp } from './support/echo-app.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { idleDriver } from './support/idle-driver.ts';
import { startRealAgent } from './support/real-agent.ts';
import { seedWorkspace, type SeededWorkspace } from './support/workspace-seed.ts';

/**
 * What gets a URL beside the workspace's own ports, who may read it across origins, and whether
 * it is up: an environment service's preview URL (the runtime says where the service listens;
 * here a loopback port, as on the process runtime), the health checks of a template's app, and
 * CORS between one owner's apps in subdomain mode. The real den server and a real agent process.
 */

const WAIT_MS = 15_000;

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

describe('service previews, app health and CORS', () => {
  let server: TestServer;
  let alice: SeededWorkspace;
  let agent: ChildProcess;
  let aliceToken: string;
  let aliceSession: string;
  const dirs: string[] = [];
  /** the workspace's app `site` */
  let site: { app: Server; wss: WebSocketServer; port: number };
  /** the environment service `api` (previewed) */
  let service: { app: Server; wss: WebSocketServer; port: number; requests: number };
  /** the workspace's app `web`, health-checked at /health; answers `healthStatus` (0: never answers) */
  let web: Server;
  let webPort: number;
  let healthStatus = 200;
  /** connections open to `web` now, and the most at once since the last reset */
  const webConnections = { open: 0, max: 0 };

  beforeAll(async () => {
    const listen = async (app: Server) => {
      await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
      return (app.address() as AddressInfo).port;
    };
    const siteApp = echoApp(1024);
    site = { ...siteApp, port: await listen(siteApp.app) };
    const serviceApp = echoApp(1024);
    service = { ...serviceApp, port: await listen(serviceApp.app), requests: 0 };
    serviceApp.app.on('request', () => service.requests++);
    web = createServer((req, res) => {
      if (req.url !== '/health') return void res.writeHead(404).end();
      if (healthStatus !== 0) res.writeHead(healthStatus).end();
    });
    web.on('connection', (socket) => {
      webConnections.max = Math.max(webConnections.max, ++webConnections.open);
      socket.on('close', () => webConnections.open--);
    });
    webPort = await listen(web);

    // the runtime puts the `api` service's port 3000 on a loopback port, as the process runtime does
    const driver: RuntimeDriver = {
      ...idleDriver,
      resolveEndpoints: async (_workspace, requests) => Object.fromEntries(requests.map((request) => [
        request.service,
        Object.fromEntries(request.ports.map((port) => [port, { host: '127.0.0.1', port: request.service === 'api' && port === 3000 ? service.port : 1 }])),
      ])),
    };
    const dataDir = mkdtempSync(join(tmpdir(), 'den-previews-'));
    const home = mkdtempSync(join(tmpdir(), 'den-previews-home-'));
    dirs.push(dataDir, home);
    server = await startTestServer({ dataDir, listen: true, startWorkers: false, driver: () => driver, config: { appsWildcardDomain: 'localtest' } });
    const db = server.store.db;
    alice = await seedWorkspace(db, { username: 'alice', workspaceName: 'dev' });
    const { template_version_id: versionId } = await db.selectFrom('workspaces').select('template_version_id').where('id', '=', alice.workspaceId).executeTakeFirstOrThrow();
    const spec = {
      workspace: {
        maxShare: 'public',
        apps: [
          { name: 'site', port: site.port },
          { name: 'web', port: webPort, healthcheck: { path: '/health', interval: '1s', threshold: 2 } },
        ],
      },
      environment: { services: { api: { command: 'x', ports: [{ port: 3000, name: 'http', preview: true }, { port: 9229 }] } } },
    };
    await db.updateTable('template_versions').set({ spec_json: JSON.stringify(spec) }).where('id', '=', versionId).execute();
    await seedWorkspace(db, { username: 'bob', workspaceName: 'mine' });
    aliceToken = (await createApiToken(db, systemClock, alice.userId, { name: 't' })).token;
    aliceSession = (await createSession(db, systemClock, alice.userId, 1)).cookieValue;
    agent = await startRealAgent(server, alice, home, {});
  }, 60_000);

  afterAll(async () => {
    agent?.kill('SIGKILL');
    await server?.close();
    for (const app of [site?.app, service?.app, web]) {
      app?.closeAllConnections();
      app?.close();
    }
    site?.wss.close();
    service?.wss.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  const serverPort = () => new URL(server.url!).port;
  const hostOf = (label: string) => `${label}.localtest:${serverPort()}`;
  const originOf = (label: string) => `http://${hostOf(label)}`;

  /** A request to den with any Host (an app host of `*.localtest`), as a browser would send it. */
  function send(method: string, host: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const request = httpRequest({ host: '127.0.0.1', port: serverPort(), method, path, headers: { host, ...headers } }, (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (text += chunk));
        response.on('end', () => resolve({ status: response.statusCode!, headers: response.headers, body: text }));
      });
      request.on('error', reject);
      request.end(body);
    });
  }

  async function ports(): Promise<WorkspacePortsDto> {
    const response = await fetch(`${server.url}/api/v1/workspaces/alice/dev/ports`, { headers: { authorization: `Bearer ${aliceToken}` } });
    expect(response.status).toBe(200);
    return (await response.json()) as WorkspacePortsDto;
  }

  async function share(target: string, level: string): Promise<void> {
    const response = await fetch(`${server.url}/api/v1/workspaces/alice/dev/shares/${target}`, {
      method: 'PUT', headers: { authorization: `Bearer ${aliceToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ level }),
    });
    expect(response.status, await response.clone().text()).toBe(200);
  }

  /** alice's cookie for one app host, through den's sign-in round trip (authorize, then the code exchange). */
  async function appCookie(label: string): Promise<string> {
    const authorize = await fetch(`${server.url}/api/v1/apps/authorize?host=${encodeURIComponent(hostOf(label))}&next=/`, { headers: { cookie: `${SESSION_COOKIE}=${aliceSession}` }, redirect: 'manual' });
    expect(authorize.status).toBe(302);
    const back = new URL(authorize.headers.get('location')!);
    const exchanged = await send('GET', back.host, `${back.pathname}${back.search}`);
    expect(exchanged.status).toBe(302);
    return String(exchanged.headers['set-cookie']).split(';')[0];
  }

  async function healthOf(name: string, state: string): Promise<{ state: string; message?: string }> {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const health = (await ports()).apps.find((app) => app.name === name)?.health;
      if (health?.state === state || Date.now() > deadline) return health ?? { state: 'absent' };
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  it('lists a previewed service port among the apps, with its subdomain URL', async () => {
    const listing = await ports();
    expect(listing.apps.map((app) => app.name)).toEqual(['site', 'web', 'api']);
    expect(listing.apps.find((app) => app.name === 'api')).toEqual({ name: 'api', port: 3000, service: 'api', url: `${originOf('api--dev--alice')}/`, share: 'owner' });
    // only apps with a health check carry one
    expect(listing.apps.find((app) => app.name === 'site')?.health).toBeUndefined();
  });

  it('reaches the service through its preview URL by path and by subdomain, where the runtime put it', async () => {
    const before = service.requests;
    const byPath = await fetch(`${server.url}/@alice/dev/apps/api/echo?q=1`, { headers: { authorization: `Bearer ${aliceToken}` } });
    expect(byPath.status).toBe(200);
    expect(((await byPath.json()) as { url: string }).url).toBe('/echo?q=1');
    expect(service.requests).toBe(before + 1);

    // owner-only: an anonymous visitor is sent to sign in, alice's own app cookie opens it
    const anonymous = await send('GET', hostOf('api--dev--alice'), '/echo');
    expect(anonymous.status).toBe(302);
    const cookie = await appCookie('api--dev--alice');
    const signedIn = await send('GET', hostOf('api--dev--alice'), '/echo', { cookie });
    expect(signedIn.status).toBe(200);
    expect((JSON.parse(signedIn.body) as { url: string; headers: IncomingHttpHeaders }).headers.cookie ?? '').not.toContain('den_app');
    expect(service.requests).toBe(before + 2);

    // shared like any app: public opens it without a cookie, and the listing says so
    await share('api', 'public');
    expect((await send('GET', hostOf('api--dev--alice'), '/echo')).status).toBe(200);
    expect((await ports()).apps.find((app) => app.name === 'api')?.share).toBe('public');
    await share('api', 'owner');
    expect((await send('GET', hostOf('api--dev--alice'), '/echo')).status).toBe(302);
    expect(service.requests).toBe(before + 3);

    // a name that is neither an app nor a preview
    const unknown = await fetch(`${server.url}/@alice/dev/apps/nope/`, { headers: { authorization: `Bearer ${aliceToken}` } });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: 'APP_NOT_FOUND' } });
  });

  it('caps a share set under a template version with a higher maxShare by the lower maxShare of the version the workspace runs now', async () => {
    const db = server.store.db;
    const { template_version_id: versionId } = await db.selectFrom('workspaces').select('template_version_id').where('id', '=', alice.workspaceId).executeTakeFirstOrThrow();
    const { spec_json: specJson } = await db.selectFrom('template_versions').select('spec_json').where('id', '=', versionId).executeTakeFirstOrThrow();
    const siteHost = hostOf(`${site.port}--dev--alice`);
    await share(String(site.port), 'public');
    expect((await send('GET', siteHost, '/echo')).status).toBe(200);
    try {
      const lower = JSON.parse(specJson) as { workspace: { maxShare: string } };
      lower.workspace.maxShare = 'authenticated';
      await db.updateTable('template_versions').set({ spec_json: JSON.stringify(lower) }).where('id', '=', versionId).execute();
      // at once: the anonymous visitor is sent to sign in, and the listing says what holds now
      expect((await send('GET', siteHost, '/echo')).status).toBe(302);
      expect((await ports()).ports.find((port) => port.port === site.port)?.share).toBe('authenticated');
    } finally {
      await db.updateTable('template_versions').set({ spec_json: specJson }).where('id', '=', versionId).execute();
      await share(String(site.port), 'owner');
    }
  });

  it('takes an app host\'s cookie and its sign-in code on that one host only, even for another app of the same workspace', async () => {
    const siteHost = hostOf(`${site.port}--dev--alice`);
    const apiHost = hostOf('api--dev--alice');
    const siteCookie = await appCookie(`${site.port}--dev--alice`);
    expect((await send('GET', siteHost, '/echo', { cookie: siteCookie })).status).toBe(200);
    // on the api preview's host the same cookie signs nobody in: the visitor goes through den again
    const elsewhere = await send('GET', apiHost, '/echo', { cookie: siteCookie });
    expect(elsewhere.status).toBe(302);
    expect(new URL(elsewhere.headers.location!).pathname).toBe('/api/v1/apps/authorize');

    // a code den issued for the site's host, handed to the api's host instead
    const authorize = await fetch(`${server.url}/api/v1/apps/authorize?host=${encodeURIComponent(siteHost)}&next=/`, { headers: { cookie: `${SESSION_COOKIE}=${aliceSession}` }, redirect: 'manual' });
    const back = new URL(authorize.headers.get('location')!);
    const misused = await send('GET', apiHost, `${back.pathname}${back.search}`);
    expect(misused.status).toBe(401);
    expect(misused.headers['set-cookie']).toBeUndefined();
  });

  it('shows an app healthy, unhealthy after `threshold` failed checks, healthy again, and unknown once the workspace stops', async () => {
    expect(await healthOf('web', 'healthy')).toMatchObject({ state: 'healthy' });
    healthStatus = 500;
    expect(await healthOf('web', 'unhealthy')).toEqual({ state: 'unhealthy', message: 'GET /health answered 500', since: expect.any(String) });
    healthStatus = 200;
    expect(await healthOf('web', 'healthy')).toMatchObject({ state: 'healthy' });
    // an app that never answers fails its check after at most its interval, and checks do not pile up
    healthStatus = 0;
    webConnections.max = webConnections.open;
    expect(await healthOf('web', 'unhealthy')).toMatchObject({ state: 'unhealthy', message: 'GET /health had no answer within 1 s' });
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(webConnections.max).toBeLessThanOrEqual(2);
    healthStatus = 200;
    expect(await healthOf('web', 'healthy')).toMatchObject({ state: 'healthy' });

    // the CLI shows the health and the previews, with their URLs
    const env = { PATH: process.env.PATH ?? '', HOME: dirs[1], XDG_CONFIG_HOME: join(dirs[1], 'cli-config'), DEN_URL: server.url!, DEN_TOKEN: aliceToken };
    const listed = await runDen(['ports', 'dev'], env, 15_000);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toMatch(/web\s+\d+\s+owner\s+healthy\s+-\s+http:\/\/web--dev--alice\.localtest/);
    expect(listed.stdout).toMatch(/api\s+3000\s+owner\s+-\s+api\s+http:\/\/api--dev--alice\.localtest/);
    const shown = await runDen(['show', 'dev'], env, 15_000);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toContain(`web  ${originOf('web--dev--alice')}/  port ${webPort}, shared with owner, healthy`);
    expect(shown.stdout).toContain(`api  ${originOf('api--dev--alice')}/  port 3000, shared with owner  preview of service api`);

    await server.store.db.updateTable('workspaces').set({ status: 'stopped' }).where('id', '=', alice.workspaceId).execute();
    expect((await ports()).apps.find((app) => app.name === 'web')?.health).toEqual({ state: 'unknown' });
    // the replica stops checking it and forgets what it recorded
    await server.den.appHealth.tick();
    expect(await server.store.db.selectFrom('app_health').selectAll().where('workspace_id', '=', alice.workspaceId).execute()).toEqual([]);
    await server.store.db.updateTable('workspaces').set({ status: 'running' }).where('id', '=', alice.workspaceId).execute();
  });

  describe('CORS in subdomain mode', () => {
    const siteLabel = () => `${site.port}--dev--alice`;
    const preflight = (origin: string) => send('OPTIONS', hostOf(siteLabel()), '/echo', {
      origin, 'access-control-request-method': 'PUT', 'access-control-request-headers': 'content-type,x-custom',
    });

    it('allows a preflight from another app of the same owner, with credentials', async () => {
      const allowed = await preflight(originOf('web--dev--alice'));
      expect(allowed.status).toBe(204);
      expect(allowed.headers).toMatchObject({
        'access-control-allow-origin': originOf('web--dev--alice'),
        'access-control-allow-credentials': 'true',
        'access-control-allow-methods': 'PUT',
        'access-control-allow-headers': 'content-type,x-custom',
        vary: 'Origin',
      });
    });

    it('refuses a preflight from another owner\'s app, a foreign site, another scheme and the dashboard', async () => {
      for (const origin of [originOf('3000--mine--bob'), 'http://evil.example', `https://${hostOf('web--dev--alice')}`, server.url!, 'null']) {
        const refused = await preflight(origin);
        expect(refused.status, origin).toBe(403);
        expect(refused.headers['access-control-allow-origin'], origin).toBeUndefined();
      }
    });

    it('answers the owner\'s other apps with their origin and drops the app\'s own CORS headers for anyone else', async () => {
      const cookie = await appCookie(siteLabel());
      const own = await send('PUT', hostOf(siteLabel()), '/echo', { cookie, origin: originOf('web--dev--alice'), 'content-type': 'application/json' }, '{}');
      expect(own.status).toBe(200);
      expect(own.headers['access-control-allow-origin']).toBe(originOf('web--dev--alice'));
      expect(own.headers['access-control-allow-credentials']).toBe('true');

      // the app says `*`: in subdomain mode den does not pass that on
      const foreign = await send('GET', hostOf(siteLabel()), '/echo', { cookie, origin: 'http://evil.example' });
      expect(foreign.status).toBe(200);
      expect(foreign.headers['access-control-allow-origin']).toBeUndefined();
      const sameOrigin = await send('GET', hostOf(siteLabel()), '/echo', { cookie });
      expect(sameOrigin.headers['access-control-allow-origin']).toBeUndefined();
      // path mode is den's own origin: the app's headers pass as they are
      const byPath = await fetch(`${server.url}/@alice/dev/ports/${site.port}/echo`, { headers: { authorization: `Bearer ${aliceToken}` } });
      expect(byPath.headers.get('access-control-allow-origin')).toBe('*');
    });

    it('refuses a change or a websocket that another owner\'s app sends with the visitor\'s cookie (app hosts are one site)', async () => {
      const cookie = await appCookie(siteLabel());
      const bobs = originOf('3000--mine--bob');
      const post = await send('POST', hostOf(siteLabel()), '/echo', { cookie, origin: bobs, 'content-type': 'text/plain' }, 'x');
      expect(post.status).toBe(403);
      expect(JSON.parse(post.body)).toMatchObject({ error: { code: 'FORBIDDEN' } });
      const upgrade = await new Promise<string>((resolve) => {
        const socket = new WebSocket(`ws://127.0.0.1:${serverPort()}/ws`, { headers: { host: hostOf(siteLabel()), cookie, origin: bobs } });
        socket.on('open', () => resolve('open'));
        socket.on('unexpected-response', (_request, response) => resolve(`status ${response.statusCode}`));
        socket.on('error', (error) => resolve(`error ${error.message}`));
      });
      expect(upgrade).toBe('status 403');
      // from the owner's own app it opens
      const opened = await new Promise<string>((resolve) => {
        const socket = new WebSocket(`ws://127.0.0.1:${serverPort()}/ws`, { headers: { host: hostOf(siteLabel()), cookie, origin: originOf('web--dev--alice') } });
        socket.on('message', (data) => {
          socket.close();
          resolve(String(data));
        });
        socket.on('error', (error) => resolve(`error ${error.message}`));
      });
      expect(JSON.parse(opened)).toMatchObject({ url: '/ws' });
      // a plain read is not refused, it just cannot be read by bob's page (no CORS headers)
      const read = await send('GET', hostOf(siteLabel()), '/echo', { cookie, origin: bobs });
      expect(read.status).toBe(200);
      expect(read.headers['access-control-allow-origin']).toBeUndefined();
    });
  });
});
