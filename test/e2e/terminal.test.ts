import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/harness.ts';
import { readTemplateFolder, waitForWorkspaceReady } from '../support/templates.ts';
import { api, setupOwner, type TestUser } from '../support/users.ts';
import { hasChromium, launchBrowser, NO_CHROMIUM, screenOf, typeInto, type Browser } from '../support/browser.ts';

/**
 * The terminal page in a real browser against a real den server: Debian's Chromium driven by
 * playwright-core, the page built by the server from web/ (Vite), a starter workspace on the
 * process runtime, its shell behind the agent link. Signs in through the page's form, types,
 * runs vim, reloads, and finds the same vim screen (the session id is in the URL).
 */

if (!hasChromium) console.warn(`[skip] browser terminal test: ${NO_CHROMIUM}`);
const WORKSPACE = 'term';
const STEP_TIMEOUT_MS = 20_000;

describe.skipIf(!hasChromium)('browser terminal (Chromium, real server, process runtime)', { timeout: 120_000 }, () => {
  let server: TestServer;
  let owner: TestUser;
  let launched: Browser;
  let browser: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    server = await startTestServer({ listen: true });
    owner = await setupOwner(server.app);
    const client = api(server.app, owner.token);
    const pushed = await client.post('/api/v1/templates', { files: readTemplateFolder(join(import.meta.dirname, '../../templates/starter')), activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    const created = await client.post('/api/v1/workspaces', { name: WORKSPACE, template: 'starter' });
    expect(created.status, JSON.stringify(created.json)).toBe(202);
    await waitForWorkspaceReady(client, owner.username, WORKSPACE, 30_000);
    launched = await launchBrowser({ width: 1000, height: 600 });
    browser = launched.context;
    page = browser.pages()[0] ?? await browser.newPage();
    page.on('console', (message) => { if (process.env.DEN_TEST_LOG) console.log('page:', message.type(), message.text(), JSON.stringify(message.location())); });
    // keep the page's websockets reachable, so the test can cut the connection the way a network drop does
    await page.addInitScript(() => {
      const sockets: WebSocket[] = [];
      (globalThis as { denTestSockets?: WebSocket[] }).denTestSockets = sockets;
      globalThis.WebSocket = class extends WebSocket {
        constructor(...args: ConstructorParameters<typeof WebSocket>) {
          super(...args);
          sockets.push(this);
        }
      };
    });
  });
  afterAll(async () => {
    await launched?.close();
    await server?.close();
  });

  it('signs in on the page, runs a command, and keeps vim across a reload', async () => {
    await page.goto(`${server.url}/@${owner.username}/${WORKSPACE}/terminal`);
    // no session cookie yet: the page asks to sign in, then opens the terminal
    await page.locator('#login').waitFor({ state: 'visible' });
    await page.fill('#login input[name=username]', owner.username);
    await page.fill('#login input[name=password]', owner.password);
    await page.click('#login button[type=submit]');
    await page.locator('#login').waitFor({ state: 'hidden' });
    // keys typed before the first `attached` are dropped (by design: never into a stale screen), so wait for the prompt
    await until(page, 'the shell prompt', (screen) => screen.trim() !== '');

    // $((...)) so the expected text is the shell's output, not the echo of what was typed
    await typeInto(page, 'echo hi-$((6*7))\n');
    await until(page, 'the output of echo', (screen) => screen.includes('hi-42'));
    const sessionId = new URL(page.url()).searchParams.get('session');
    expect(sessionId).toMatch(/^[A-Za-z0-9_-]{1,64}$/);

    await typeInto(page, 'vim -u NONE -i NONE -N -n notes.txt\n');
    await until(page, 'vim', (screen) => screen.includes('notes.txt'));
    await typeInto(page, 'ihello from vim');
    await page.keyboard.press('Escape');
    // vim clears "-- INSERT --" only after its escape-sequence timeout
    await until(page, 'the text typed into vim', (screen) => screen.includes('hello from vim') && !screen.includes('-- INSERT --'));
    const before = await screenOf(page);

    await page.reload();
    await until(page, 'the shell prompt after the reload', (screen) => screen.trim() !== '');
    // the reloaded page reattaches by the id in its URL and gets vim's screen back from the agent's mirror
    await until(page, 'the same vim screen after the reload', (screen) => screen === before);
    expect(new URL(page.url()).searchParams.get('session')).toBe(sessionId);
    expect(await page.locator('#login').isHidden()).toBe(true);

    // a dropped connection: the banner says so over the unchanged screen, then the page reattaches
    await page.evaluate(() => {
      const banner = document.getElementById('banner')!;
      const seen: { text: string; screenKept: boolean }[] = [];
      (globalThis as { denTestBanner?: unknown }).denTestBanner = seen;
      new MutationObserver(() => {
        if (banner.hidden) return;
        const terminal = (globalThis as { denTerminal?: { terminal: any } }).denTerminal!.terminal;
        const buffer = terminal.buffer.active;
        let text = '';
        for (let y = 0; y < terminal.rows; y++) text += buffer.getLine(buffer.viewportY + y)?.translateToString(true) ?? '';
        seen.push({ text: banner.textContent ?? '', screenKept: text.includes('hello from vim') });
      }).observe(banner, { attributes: true, childList: true, characterData: true, subtree: true });
      (globalThis as { denTestSockets?: WebSocket[] }).denTestSockets!.at(-1)!.close(4999, 'test: cut the connection');
    });
    await until(page, 'the reattach after the cut', async () => (await page.evaluate(() => {
      const sockets = (globalThis as { denTestSockets?: WebSocket[] }).denTestSockets!;
      return sockets.length >= 2 && sockets.at(-1)!.readyState === WebSocket.OPEN && document.getElementById('banner')!.hidden === true;
    })));
    const seen = await page.evaluate(() => (globalThis as { denTestBanner?: { text: string; screenKept: boolean }[] }).denTestBanner!);
    expect(seen.length, 'the banner was shown').toBeGreaterThan(0);
    expect(seen[0].text).toMatch(/reconnecting/i);
    expect(seen.every((entry) => entry.screenKept), 'the screen stays while reconnecting').toBe(true);
    expect(await screenOf(page)).toBe(before);

    await typeInto(page, ':q!\n');
    // type the next command once vim has gone: keys that reach vim while it exits are vim's, and lost
    await until(page, 'vim to exit', (screen) => !screen.includes('hello from vim'));
    await typeInto(page, 'echo back-$((1+1))\n');
    await until(page, 'the shell after vim', (screen) => screen.includes('back-2') && !screen.includes('hello from vim'));
  });

  it('follows the window size: the shell sees the new rows and columns', async () => {
    const size = () => page.evaluate(() => {
      const terminal = (globalThis as { denTerminal?: { terminal: { cols: number; rows: number } } }).denTerminal!.terminal;
      return `${terminal.rows} ${terminal.cols}`;
    });
    const before = await size();
    await page.setViewportSize({ width: 700, height: 400 });
    await until(page, 'xterm.js to fit the smaller window', async () => (await size()) !== before);
    const after = await size();
    await typeInto(page, 'clear; stty size\n');
    await until(page, `stty to report ${after}`, (screen) => screen.split('\n').some((line) => line.trim() === after));
  });

  it('asks to sign in again when the session ends, then reattaches to the same shell', async () => {
    await typeInto(page, 'clear; echo still-$((2*3))\n');
    await until(page, 'the marker', (screen) => screen.includes('still-6'));
    await browser.clearCookies();
    // the reconnect is refused (HTTP 401 before the upgrade); the page finds out why and shows the form
    await page.evaluate(() => (globalThis as { denTestSockets?: WebSocket[] }).denTestSockets!.at(-1)!.close(4999, 'test: cut the connection'));
    await page.locator('#login').waitFor({ state: 'visible' });
    expect(await screenOf(page)).toContain('still-6');
    await page.fill('#login input[name=username]', owner.username);
    await page.fill('#login input[name=password]', owner.password);
    await page.click('#login button[type=submit]');
    await page.locator('#login').waitFor({ state: 'hidden' });
    await until(page, 'the reattach after signing in', async (screen) => screen.includes('still-6') && await page.evaluate(() => document.getElementById('banner')!.hidden === true));
    await typeInto(page, 'echo again-$((3*3))\n');
    await until(page, 'input after the reattach', (screen) => screen.includes('again-9'));
  });

  it('says so when the shell exits, and a reload starts a new shell', async () => {
    const ended = new URL(page.url()).searchParams.get('session');
    await typeInto(page, 'exit 3\n');
    await page.locator('#banner.fatal').waitFor({ state: 'visible' });
    expect(await page.locator('#banner').textContent()).toContain('exited with status 3');
    expect(new URL(page.url()).searchParams.get('session')).toBeNull();
    await page.reload();
    await until(page, 'a new shell', (screen) => screen.trim() !== '');
    await until(page, 'a new session id in the URL', () => Boolean(new URL(page.url()).searchParams.get('session')));
    expect(new URL(page.url()).searchParams.get('session')).not.toBe(ended);
  });

  it('connects when opened as localhost while the access URL says 127.0.0.1 (both are this machine)', async () => {
    const other = await browser.newPage();
    try {
      const url = new URL(`/@${owner.username}/${WORKSPACE}/terminal`, server.url);
      url.hostname = 'localhost';
      await other.goto(url.href);
      // the session cookie belongs to 127.0.0.1: sign in under this name too
      await other.locator('#login').waitFor({ state: 'visible' });
      await other.fill('#login input[name=username]', owner.username);
      await other.fill('#login input[name=password]', owner.password);
      await other.click('#login button[type=submit]');
      await until(other, 'the shell under localhost', (screen) => screen.trim() !== '');
      await typeInto(other, 'echo local-$((5*5))\n');
      await until(other, 'the output under localhost', (screen) => screen.includes('local-25'));
    } finally {
      await other.close();
    }
  });

  it('says where to go when opened under another name, in a banner that fits a 1100 px window', async () => {
    const other = await browser.newPage();
    try {
      await other.setViewportSize({ width: 1100, height: 700 });
      const url = new URL(`/@${owner.username}/${WORKSPACE}/terminal`, server.url);
      url.hostname = 'den.test'; // resolves to this machine (see test/support/browser.ts), not a loopback name
      await other.goto(url.href);
      await other.locator('#banner.fatal').waitFor({ state: 'visible' });
      expect(await other.locator('#banner').textContent()).toContain(`does not connect from http://den.test:${url.port}`);
      expect(await other.locator('#banner a').getAttribute('href')).toBe(`${server.url}/@${owner.username}/${WORKSPACE}/terminal`);
      const box = (await other.locator('#banner').boundingBox())!;
      expect(box.x).toBeGreaterThanOrEqual(0);
      expect(box.x + box.width).toBeLessThanOrEqual(1100);
    } finally {
      await other.close();
    }
  });
});

async function until(page: Page, what: string, done: (screen: string) => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  let screen = '';
  while (Date.now() < deadline) {
    screen = await screenOf(page).catch(() => '');
    if (await done(screen)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const banner = await page.locator('#banner').textContent().catch(() => null);
  const sockets = await page.evaluate(() => (globalThis as { denTestSockets?: WebSocket[] }).denTestSockets?.map((socket) => socket.readyState)).catch(() => undefined);
  throw new Error(`Timed out waiting for ${what}. Banner: ${banner ?? '(none)'}. Websocket states: ${JSON.stringify(sockets)}. Screen:\n${screen.trimEnd()}`);
}
