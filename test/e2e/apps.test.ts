import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BrowserContext } from 'playwright-core';
import { createServer as createViteServer } from 'vite';
import type { WebSocketServer } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiToken } from '../../server/auth/api-tokens.ts';
import { hashPassword } from '../../server/auth/passwords.ts';
import { createSession, SESSION_COOKIE } from '../../server/auth/sessions.ts';
import { systemClock } from '../../server/store/time.ts';
import { hasChromium, launchBrowser, NO_CHROMIUM, type Browser } from '../support/browser.ts';
import { runDen } from '../support/den-cli.ts';
import { echoApp } from '../support/echo-app.ts';
import { startTestServer, type TestServer } from '../support/harness.ts';
import { idleDriver } from '../support/idle-driver.ts';
import { startRealAgent } from '../support/real-agent.ts';
import { seedWorkspace, type SeededWorkspace } from '../support/workspace-seed.ts';

/**
 * Apps through den in real Chromium: the real den server with `--apps-wildcard-domain apps.localtest`
 * (Chromium resolves *.localtest to loopback; the app hosts are one site, apps.localtest, as under
 * a real wildcard domain such as apps.example.com), a real agent process, and an app that echoes what
 * it receives. Subdomain mode's sign-in round trip through den, path mode, a websocket and
 * server-sent events from the page, and who is refused.
 */

const CI = process.env.CI === 'true';
/** the first page waits for the server's start-up build of the dashboard (Vite) */
const DASHBOARD_TIMEOUT_MS = 60_000;
/** one step of a page (a dev server's first transform, an HMR update) on a busy machine */
const STEP_TIMEOUT_MS = 30_000;
const ALICE_PASSWORD = 'correct horse battery';
if (!hasChromium && !CI) console.warn(`[skip] apps browser test: ${NO_CHROMIUM}`);

interface Echo {
  url: string;
  headers: Record<string, string>;
}

describe.skipIf(!hasChromium && !CI)('apps through den in Chromium', () => {
  let server: TestServer;
  let alice: SeededWorkspace;
  let agent: ChildProcess;
  let app: Server;
  let wss: WebSocketServer;
  let appPort: number;
  let browser: Browser;
  const dirs: string[] = [];
  const cookies: Record<'alice' | 'bob', string> = { alice: '', bob: '' };
  let aliceToken: string;

  beforeAll(async () => {
    ({ app, wss } = echoApp(1024));
    await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
    appPort = (app.address() as AddressInfo).port;
    const dataDir = mkdtempSync(join(tmpdir(), 'den-apps-e2e-'));
    const home = mkdtempSync(join(tmpdir(), 'den-apps-e2e-home-'));
    dirs.push(dataDir, home);
    server = await startTestServer({ dataDir, listen: true, startWorkers: false, driver: () => idleDriver, config: { appsWildcardDomain: 'apps.localtest' } });
    const db = server.store.db;
    alice = await seedWorkspace(db, { username: 'alice', workspaceName: 'dev' });
    // the template lets its apps be shared with anyone
    const { template_version_id: versionId } = await db.selectFrom('workspaces').select('template_version_id').where('id', '=', alice.workspaceId).executeTakeFirstOrThrow();
    await db.updateTable('template_versions').set({ spec_json: JSON.stringify({
      workspace: { maxShare: 'public', apps: [{ name: 'web', port: appPort, healthcheck: { path: '/echo', interval: '1s', threshold: 1 } }] },
      // listed on the dashboard; never opened here (the idle runtime places no service)
      environment: { services: { api: { command: 'x', ports: [{ port: 3000, preview: true }] } } },
    }) }).where('id', '=', versionId).execute();
    aliceToken = (await createApiToken(db, systemClock, alice.userId, { name: 't' })).token;
    const bob = await seedWorkspace(db, { username: 'bob', workspaceName: 'mine' });
    cookies.alice = (await createSession(db, systemClock, alice.userId, 1)).cookieValue;
    cookies.bob = (await createSession(db, systemClock, bob.userId, 1)).cookieValue;
    agent = await startRealAgent(server, alice, home, {});
    browser = await launchBrowser({ width: 1000, height: 700 });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    agent?.kill('SIGKILL');
    await server?.close();
    wss?.close();
    app?.closeAllConnections();
    app?.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  /** The browser signed in to den as `who` (its session cookie on den's origin, every other cookie gone), or anonymous. */
  async function contextAs(who: 'alice' | 'bob' | 'anonymous'): Promise<BrowserContext> {
    await browser.context.clearCookies();
    if (who !== 'anonymous') await browser.context.addCookies([{ name: SESSION_COOKIE, value: cookies[who], url: server.url! }]);
    return browser.context;
  }

  const appHost = () => `http://${appPort}--dev--alice.apps.localtest:${new URL(server.url!).port}`;

  it('opens a port by its subdomain: signs in through den, and the app never sees den\'s cookies', async () => {
    const context = await contextAs('alice');
    const page = await context.newPage();
    const response = await page.goto(`${appHost()}/echo?from=browser`);
    expect(response?.status()).toBe(200);
    expect(new URL(page.url()).host).toBe(new URL(appHost()).host);
    const echo = JSON.parse(await page.locator('body').innerText()) as Echo;
    expect(echo.url).toBe('/echo?from=browser');
    expect(echo.headers.cookie ?? '').not.toContain(SESSION_COOKIE);
    expect(echo.headers.cookie ?? '').not.toContain('den_app');
    expect(echo.headers.host).toBe(`localhost:${appPort}`);
    expect(echo.headers['x-forwarded-host']).toBe(new URL(appHost()).host);
    // the app origin now has its own cookie, scoped to that host, and den's session is not there
    const appCookies = await context.cookies(appHost());
    expect(appCookies.map((cookie) => cookie.name).sort()).toEqual(['a', 'b', 'den_app']);
    expect(appCookies.find((cookie) => cookie.name === 'den_app')).toMatchObject({ httpOnly: true, domain: new URL(appHost()).hostname });

    // a websocket and server-sent events from the app's own page
    const fromPage = await page.evaluate(async () => {
      const socket = new WebSocket(`ws://${location.host}/ws`);
      const messages: string[] = [];
      await new Promise<void>((resolve, reject) => {
        socket.onmessage = (event) => {
          messages.push(String(event.data));
          if (messages.length === 1) socket.send('hi');
          if (messages.length === 2) resolve();
        };
        socket.onerror = () => reject(new Error('websocket failed'));
      });
      socket.close();
      const events = new EventSource('/events');
      const ticks: string[] = [];
      await new Promise<void>((resolve) => {
        events.onmessage = (event) => {
          ticks.push(event.data);
          if (ticks.length === 3) resolve();
        };
      });
      events.close();
      return { messages, ticks };
    });
    expect(JSON.parse(fromPage.messages[0])).toEqual({ origin: `http://localhost:${appPort}`, cookie: 'a=1; b=2', url: '/ws' });
    expect(fromPage.messages[1]).toBe('echo:hi');
    expect(fromPage.ticks).toEqual(['tick 1', 'tick 2', 'tick 3']);
    await page.close();
  });

  it.each(['subdomain', 'path'] as const)('leads a browser that is not signed in to den from an owner-only app (by %s) through den\'s sign-in page, and back to the app', async (mode) => {
    await server.store.db.updateTable('users').set({ password_hash: await hashPassword(ALICE_PASSWORD) }).where('id', '=', alice.userId).execute();
    const appUrl = new URL(mode === 'subdomain' ? `${appHost()}/echo?from=login` : `${server.url}/@alice/dev/ports/${appPort}/echo?from=login`);
    const context = await contextAs('anonymous');
    const page = await context.newPage();
    await page.goto(appUrl.href);
    await page.getByRole('heading', { name: 'Sign in to den' }).waitFor({ timeout: DASHBOARD_TIMEOUT_MS });
    expect(new URL(page.url()).origin).toBe(new URL(server.url!).origin);
    expect(new URL(page.url()).pathname).toBe('/login');
    await page.getByLabel('Username').fill('alice');
    await page.getByLabel('Password').fill(ALICE_PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    // by subdomain: den's authorize step and the app host's code exchange first; then the page first asked for
    await page.waitForURL((url) => url.host === appUrl.host && url.pathname === appUrl.pathname, { timeout: STEP_TIMEOUT_MS });
    const echo = JSON.parse(await page.locator('body').innerText()) as Echo;
    expect(echo.url).toBe('/echo?from=login');
    expect(echo.headers.cookie ?? '').not.toContain(SESSION_COOKIE);
    if (mode === 'subdomain') expect((await context.cookies(appHost())).map((cookie) => cookie.name)).toContain('den_app');
    await page.close();
  });

  it('opens a port by path, without den\'s session cookie reaching the app', async () => {
    const context = await contextAs('alice');
    const page = await context.newPage();
    await page.goto(`${server.url}/@alice/dev/ports/${appPort}/echo`);
    const echo = JSON.parse(await page.locator('body').innerText()) as Echo;
    expect(echo.url).toBe('/echo');
    expect(echo.headers.cookie ?? '').not.toContain(SESSION_COOKIE);
    await page.close();
  });

  it('refuses another user and an anonymous visitor, by subdomain and by path', async () => {
    for (const who of ['bob', 'anonymous'] as const) {
      const context = await contextAs(who);
      const page = await context.newPage();
      const bySubdomain = await page.goto(`${appHost()}/echo`);
      // the round trip ends at den: bob may not see alice's workspace; nobody signed in gets den's sign-in page
      expect(bySubdomain?.status(), who).toBe(who === 'bob' ? 404 : 200);
      if (who === 'anonymous') expect(new URL(page.url()).pathname).toBe('/login');
      expect(await page.locator('body').innerText()).not.toContain('"headers"');
      const byPath = await page.goto(`${server.url}/@alice/dev/ports/${appPort}/echo`);
      expect(byPath?.status(), who).toBe(who === 'bob' ? 404 : 200);
      if (who === 'anonymous') expect(new URL(page.url()).pathname).toBe('/login');
      expect(await page.locator('body').innerText()).not.toContain('"headers"');
      await page.close();
    }
  });

  it('takes a share-level change into account at the next request: authenticated lets bob in, owner shuts him out, public needs no sign-in', async () => {
    const share = async (level: string) => {
      const response = await fetch(`${server.url}/api/v1/workspaces/alice/dev/shares/${appPort}`, { method: 'PUT', headers: { authorization: `Bearer ${aliceToken}`, 'content-type': 'application/json' }, body: JSON.stringify({ level }) });
      expect(response.status).toBe(200);
    };
    const context = await contextAs('bob');
    const page = await context.newPage();
    expect((await page.goto(`${appHost()}/echo`))?.status()).toBe(404);

    // with the CLI, as alice would
    const cli = await runDen(['share', 'dev', String(appPort), '--level', 'authenticated'], { PATH: process.env.PATH ?? '', HOME: dirs[1], XDG_CONFIG_HOME: join(dirs[1], 'cli-config'), DEN_URL: server.url!, DEN_TOKEN: aliceToken }, 15_000);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toContain(`${appHost()}/`);
    expect((await page.goto(`${appHost()}/echo`))?.status()).toBe(200);

    await share('owner');
    // bob still holds the app host's cookie: it no longer opens anything
    expect((await context.cookies(appHost())).map((cookie) => cookie.name)).toContain('den_app');
    expect((await page.goto(`${appHost()}/echo`))?.status()).toBe(404);

    await share('public');
    const anonymous = await contextAs('anonymous');
    const response = await page.goto(`${appHost()}/echo`);
    expect(response?.status()).toBe(200);
    expect(new URL(page.url()).host).toBe(new URL(appHost()).host);
    expect((await anonymous.cookies(appHost())).map((cookie) => cookie.name)).not.toContain('den_app');

    // every change is among the workspace's events
    const events = (await (await fetch(`${server.url}/api/v1/workspaces/alice/dev/events`, { headers: { authorization: `Bearer ${aliceToken}` } })).json()) as { events: { kind: string; detail: { level: string } }[] };
    expect(events.events.filter((event) => event.kind === 'app.share').map((event) => event.detail.level)).toEqual(['public', 'owner', 'authenticated']);
    await share('owner');
    await page.close();
  });

  it('lets one owner\'s apps read each other across origins with credentials, and refuses every other origin', async () => {
    const context = await contextAs('alice');
    const page = await context.newPage();
    const webHost = `http://web--dev--alice.apps.localtest:${new URL(server.url!).port}`;
    // signed in to both app hosts (each has its own cookie)
    expect((await page.goto(`${appHost()}/echo`))?.status()).toBe(200);
    expect((await page.goto(`${webHost}/echo`))?.status()).toBe(200);
    const crossFetch = (target: string) => page.evaluate(async (url) => {
      try {
        const response = await fetch(url, { method: 'PUT', credentials: 'include', headers: { 'content-type': 'application/json', 'x-den-test': '1' }, body: '{}' });
        return { status: response.status, echo: await response.json() };
      } catch (error) {
        return { refused: String(error) };
      }
    }, `${target}/echo`);
    // from the app `web` to the port URL of the same workspace: a preflight, then the request with the port host's cookie
    const allowed = await crossFetch(appHost());
    expect(allowed).toMatchObject({ status: 200, echo: { method: 'PUT', headers: { 'x-den-test': '1', origin: webHost } } });
    expect((allowed as { echo: Echo }).echo.headers.cookie).toBe('a=1; b=2');

    // from an app of bob's (its page stands in for his app) and from a site outside den: the browser refuses
    for (const foreign of [`http://8080--mine--bob.apps.localtest:${new URL(server.url!).port}`, 'http://elsewhere.localtest']) {
      await page.route(`${foreign}/**`, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>not alice</title>' }));
      await page.goto(`${foreign}/`);
      expect(await crossFetch(appHost()), foreign).toMatchObject({ refused: expect.stringContaining('Failed to fetch') });
    }
    await page.close();
  });

  it('serves a Vite dev server as it is: the page loads by its subdomain URL, and an edit arrives over HMR without a reload', async () => {
    const root = mkdtempSync(join(tmpdir(), 'den-apps-e2e-vite-'));
    dirs.push(root);
    writeFileSync(join(root, 'index.html'), '<!doctype html><title>vite</title><p id="message"></p><script type="module" src="/main.js"></script>');
    writeFileSync(join(root, 'message.js'), 'export const message = \'first\';\n');
    writeFileSync(join(root, 'main.js'), [
      'import { message } from \'./message.js\';',
      'const show = (text) => (document.querySelector(\'#message\').textContent = text);',
      'show(message);',
      'import.meta.hot.accept(\'./message.js\', (next) => show(next.message));',
    ].join('\n'));
    // no configuration for den: Vite's own defaults (allowed hosts, HMR on the page's host and port)
    const vite = await createViteServer({ root, configFile: false, logLevel: 'silent', server: { host: '127.0.0.1', port: 0 } });
    await vite.listen();
    const vitePort = (vite.httpServer!.address() as AddressInfo).port;
    const context = await contextAs('alice');
    const page = await context.newPage();
    try {
      const viteHost = `http://${vitePort}--dev--alice.apps.localtest:${new URL(server.url!).port}`;
      const sockets: string[] = [];
      page.on('websocket', (socket) => sockets.push(socket.url()));
      expect((await page.goto(`${viteHost}/`))?.status()).toBe(200);
      await page.locator('#message', { hasText: 'first' }).waitFor({ timeout: STEP_TIMEOUT_MS });
      // a page that reloaded would lose this
      await page.evaluate(() => Object.assign(window, { loadedOnce: true }));
      writeFileSync(join(root, 'message.js'), 'export const message = \'second\';\n');
      await page.locator('#message', { hasText: 'second' }).waitFor({ timeout: STEP_TIMEOUT_MS });
      expect(await page.evaluate(() => (window as { loadedOnce?: boolean }).loadedOnce)).toBe(true);
      // the update came over Vite's websocket through den (the app host on den's port), not to Vite's port
      expect(sockets.map((url) => new URL(url).host)).toEqual([new URL(viteHost).host]);
    } finally {
      await page.close();
      await vite.close();
    }
  }, 3 * STEP_TIMEOUT_MS);

  it('links the listening ports, the apps with their health and the services\' previews from the dashboard\'s workspace page', async () => {
    const context = await contextAs('alice');
    const page = await context.newPage();
    await page.goto(`${server.url}/@alice/dev`);
    const link = page.locator(`a[href="${appHost()}/"]`);
    await link.waitFor({ timeout: DASHBOARD_TIMEOUT_MS });
    expect(await link.innerText()).toBe(`${appHost()}/`);
    // the template's app with its health (checked through the agent), and the service's preview URL
    const apps = page.getByTestId('apps');
    await apps.locator('li', { hasText: 'healthy' }).waitFor({ timeout: 15_000 });
    expect(await apps.locator('li').allInnerTexts()).toEqual([
      `web (port ${appPort}, shared with owner) healthy`,
      'api (preview of service api, port 3000, shared with owner)',
    ]);
    const port = new URL(server.url!).port;
    expect(await apps.locator('a').evaluateAll((links) => links.map((a) => a.getAttribute('href')))).toEqual([
      `http://web--dev--alice.apps.localtest:${port}/`, `http://api--dev--alice.apps.localtest:${port}/`,
    ]);
    await page.close();
  });
});
