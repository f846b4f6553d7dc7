import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

/**
 * Debian's Chromium driven by playwright-core, for the browser tests (test/e2e). `.ci/run`
 * installs the chromium package; without it the tests skip with this reason.
 */
export const CHROMIUM = '/usr/bin/chromium';
export const hasChromium = existsSync(CHROMIUM);
export const NO_CHROMIUM = `${CHROMIUM} is missing; install Debian's chromium package (apt-get install -y chromium; .ci/run does).`;

// Without these Chromium calls home (updates, sync, field trials) on a network that has no outside.
// den.test resolves to this machine, for pages opened under a name that is not the access URL's;
// every *.localtest too, for the app hosts of subdomain mode (test/e2e/apps.test.ts).
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--host-resolver-rules=MAP den.test 127.0.0.1, MAP *.localtest 127.0.0.1'];

/** Screenshots of the browser tests, kept as artifacts (git-ignored). */
export const SCREENSHOTS = resolve(import.meta.dirname, '..', '..', 'test-results', 'screenshots');

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** A headless Chromium with a throwaway profile. */
export async function launchBrowser(viewport: { width: number; height: number }): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), 'den-chromium-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** Keys go to xterm.js's hidden textarea, the way a user types. */
export async function typeInto(page: Page, text: string): Promise<void> {
  await page.locator('.xterm-helper-textarea:visible').first().focus();
  await page.keyboard.type(text);
}

/** The visible rows as text, from xterm.js's buffer (the WebGL renderer draws no DOM text). */
export function screenOf(page: Page): Promise<string> {
  return page.evaluate(() => {
    const terminal = (globalThis as { denTerminal?: { terminal: any } }).denTerminal?.terminal;
    if (!terminal) return '';
    const buffer = terminal.buffer.active;
    const rows: string[] = [];
    for (let y = 0; y < terminal.rows; y++) rows.push(buffer.getLine(buffer.viewportY + y)?.translateToString(true) ?? '');
    return rows.join('\n');
  });
}
