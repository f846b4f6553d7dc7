import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../support/harness.ts';
import { waitForWorkspaceReady } from '../support/templates.ts';
import { api } from '../support/users.ts';
import { hasChromium, launchBrowser, NO_CHROMIUM, screenOf, screenshot, typeInto, type Browser } from '../support/browser.ts';

/**
 * The dashboard in Debian's Chromium against a real den server on the process runtime, as a new
 * owner uses it from the first page: setup, upload a template, create a workspace with
 * parameters, watch its build, run a command in its terminal, read a service's log, stop, start,
 * delete. Then what a member may not see, and what they see of an environment shared with a group
 * they are in (read-only, from "Shared with me"), while the owner sees it with its teammates. One
 * server and one browser for the whole file; axe-core checks the main pages; screenshots go to
 * test-results/screenshots/.
 */

if (!hasChromium) console.warn(`[skip] dashboard browser test: ${NO_CHROMIUM}`);

const STEP_TIMEOUT_MS = 30_000;
const PASSWORD = 'dashboard-owner-pass';
const MEMBER_PASSWORD = 'dashboard-member-pass';
const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

const TEMPLATE_YAML = `name: webtest
displayName: Web test
description: A workspace with parameters and a service, for the dashboard test.
parameters:
  - name: greeting
    displayName: Greeting
    type: string
    default: hello
    validation:
      max: 20
  - name: size
    displayName: Size
    type: string
    default: small
    options: [small, large]
    mutable: false
  - name: replicas
    type: number
    default: 1
    validation:
      min: 1
      max: 3
workspace:
  image: den/base
  env:
    GREETING: "\${{ params.greeting }}"
  startup:
    - name: say-hello
      run: echo "greeting is $GREETING"
  apps:
    - { name: web, displayName: Web, port: 8080 }
environment:
  services:
    ticker:
      image: den/base
      command: ['sh', '-c', 'while :; do echo ticker-alive; sleep 0.5; done']
      env:
        ROLE: ticker-role
      ports:
        - { port: 9000, name: metrics }
      agent: true
  tests:
    smoke:
      service: ticker
      run: echo "smoke in $ROLE"
`;

describe.skipIf(!hasChromium)('dashboard (Chromium, real server, process runtime)', { timeout: 180_000 }, () => {
  let server: TestServer;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let owner: string;

  beforeAll(async () => {
    server = await startTestServer({ listen: true });
    browser = await launchBrowser({ width: 1280, height: 900 });
    context = browser.context;
    page = context.pages()[0] ?? await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT_MS);
    page.on('console', (message) => { if (process.env.DEN_TEST_LOG) console.log('page:', message.type(), message.text()); });
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  it('lands a new server on first-user setup, and signs the owner in', async () => {
    // the terminal page's sign-in on a server without users says so, and where to go
    await page.goto(`${server.url}/@someone/some-workspace/terminal`);
    await page.fill('#login input[name=username]', 'admin');
    await page.fill('#login input[name=password]', 'any-password');
    await page.click('#login button[type=submit]');
    await page.getByText(`This den server has no users yet. Create the first (owner) account: open ${server.url}/ in a browser`).waitFor();

    await page.goto(`${server.url}/`);
    await page.waitForURL(/\/setup$/);
    await page.getByRole('heading', { name: 'Welcome to den' }).waitFor();
    await screenshot(page, '01-setup');
    await expectAccessible(page, 'setup');
    owner = 'boss';
    await page.getByLabel('Username').fill(owner);
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    await page.getByLabel('Repeat the password').fill('something-else');
    await page.getByRole('button', { name: 'Create the owner account' }).click();
    await page.getByText('The two passwords differ.').waitFor();
    // what was typed is still there
    expect(await page.getByLabel('Username').inputValue()).toBe(owner);
    await page.getByLabel('Repeat the password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Create the owner account' }).click();
    await page.getByRole('heading', { name: 'Workspaces' }).waitFor();
    expect(new URL(page.url()).pathname).toBe('/workspaces');
  });

  it('uploads a template: an invalid folder shows its error at the line, a valid one becomes active', async () => {
    await page.getByRole('link', { name: 'Templates' }).click();
    await page.getByRole('heading', { name: 'Templates', exact: true }).waitFor();
    const broken = TEMPLATE_YAML.replace('type: number', 'type: numbr');
    await page.getByTestId('template-files').setInputFiles({ name: 'template.yaml', mimeType: 'text/yaml', buffer: Buffer.from(broken) });
    await page.getByRole('button', { name: 'Upload' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    const line = broken.split('\n').findIndex((text) => text.includes('numbr')) + 1;
    await alert.getByText(`template.yaml line ${line}:`).waitFor();
    expect(await alert.locator('pre.quote').first().textContent()).toBe(`${line} |     type: numbr`);
    await screenshot(page, '02-template-error');

    await page.getByTestId('template-files').setInputFiles({ name: 'template.yaml', mimeType: 'text/yaml', buffer: Buffer.from(TEMPLATE_YAML) });
    await page.getByRole('button', { name: 'Upload' }).click();
    await page.getByText('Uploaded webtest v1 (active).').waitFor();
    await page.getByRole('cell', { name: /Web test/ }).waitFor();

    // a tarball of the folder (`tar czf`, one top folder): a new version; the same again: nothing new
    const folder = mkdtempSync(join(tmpdir(), 'den-dashboard-tgz-'));
    try {
      mkdirSync(join(folder, 'webtest'));
      writeFileSync(join(folder, 'webtest', 'template.yaml'), TEMPLATE_YAML);
      writeFileSync(join(folder, 'webtest', 'NOTES.md'), 'pushed as a tarball\n');
      execFileSync('tar', ['czf', join(folder, 'webtest.tgz'), '-C', folder, 'webtest']);
      await page.getByTestId('template-files').setInputFiles(join(folder, 'webtest.tgz'));
      await page.getByText('2 files: NOTES.md, template.yaml').waitFor();
      await page.getByRole('button', { name: 'Upload' }).click();
      await page.getByText('Uploaded webtest v2 (active).').waitFor();
      await page.getByTestId('template-files').setInputFiles(join(folder, 'webtest.tgz'));
      await page.getByRole('button', { name: 'Upload' }).click();
      await page.getByText('webtest v2 already has these files; nothing new was stored.').waitFor();
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
    await expectAccessible(page, 'templates');
    await screenshot(page, '03-templates');
  });

  it('creates a workspace from the form the parameters make, and shows its build log live', async () => {
    await page.getByRole('link', { name: 'Workspaces' }).click();
    await page.getByRole('link', { name: 'New workspace' }).click();
    await page.getByLabel('Greeting').waitFor();
    expect(await page.getByLabel('Greeting').inputValue()).toBe('hello');
    // options become radios; an immutable parameter says so
    expect(await page.getByRole('radio', { name: 'small' }).isChecked()).toBe(true);
    await page.getByText('Fixed once the workspace is created.').waitFor();
    await expectAccessible(page, 'create');
    await page.getByLabel('Name').fill('Bad Name');
    await page.getByText('Use lowercase letters, digits and inner dashes only').waitFor();
    await page.getByLabel('replicas').fill('9');
    await page.getByText('Enter at most 3.').waitFor();
    await screenshot(page, '04-create-invalid');
    await page.getByLabel('Name').fill('web1');
    await page.getByLabel('replicas').fill('2');
    await page.getByLabel('Greeting').fill('hi-from-the-form');
    await page.getByRole('radio', { name: 'large' }).check();
    await page.getByRole('button', { name: 'Create workspace' }).click();
    await page.waitForURL(new RegExp(`/@${owner}/web1$`));
    await page.getByTestId('build-log').getByText('greeting is hi-from-the-form').waitFor();
    await page.locator('.status', { hasText: 'running' }).first().waitFor();
    // the timeline: one row per step with its duration
    await page.locator('ol.timeline li', { hasText: 'apply' }).getByText(/\d+(\.\d)? m?s/).waitFor();
    // the template's app, linked through den
    await page.getByRole('link', { name: 'Web', exact: true }).waitFor();
    const params = await page.getByRole('table').last().textContent();
    expect(params).toContain('large');
    expect(params).toContain('2');
    await expectAccessible(page, 'workspace');
    await screenshot(page, '05-workspace');
  });

  it('opens a terminal tab and runs a command in the workspace', async () => {
    await page.getByRole('button', { name: 'Open a terminal', exact: true }).click();
    await until('the shell prompt', async () => (await screenOf(page)).trim() !== '');
    await typeInto(page, 'echo dash-$((6*7)) $GREETING\n');
    await until('the command output', async () => (await screenOf(page)).includes('dash-42 hi-from-the-form'));
    await screenshot(page, '06-terminal');
  });

  it('shows the services with their state and ports, the agents, a service\'s log, and opens a terminal beside the service', async () => {
    const ticker = page.getByTestId('services').getByRole('row', { name: /ticker/ });
    await ticker.locator('.status', { hasText: 'running' }).waitFor();
    // the process runtime remaps the port: the address is where the workspace reaches it
    expect(await ticker.textContent()).toMatch(/9000 \(metrics\) at 127\.0\.0\.1:\d+/);
    const agents = page.getByTestId('agents');
    await agents.getByRole('row', { name: /main/ }).getByText('in the workspace').waitFor();
    const tickerAgent = agents.getByRole('row', { name: /ticker/ });
    await tickerAgent.getByText('beside service ticker').waitFor();
    await tickerAgent.locator('.status', { hasText: 'ready' }).waitFor();
    await tickerAgent.getByText(/^connected/).waitFor();

    await page.getByRole('button', { name: 'Show the log of ticker' }).click();
    await page.getByTestId('service-log').getByText('ticker-alive').first().waitFor();

    // the shell runs beside the service (its environment), in a tab of its own
    await page.getByRole('button', { name: 'Open a terminal in ticker' }).click();
    await page.getByRole('tab', { name: 'Terminal 2 (ticker)', selected: true }).waitFor();
    await until('the service shell', async () => (await screenOf(page)).trim() !== '');
    await typeInto(page, 'echo role=$ROLE\n');
    await until('the output from inside the service', async () => (await screenOf(page)).includes('role=ticker-role'));
    await expectAccessible(page, 'workspace-services');
    await screenshot(page, '06-service-terminal');
  });

  it('says on the terminal page when the service named runs no agent, instead of retrying', async () => {
    await page.goto(`${server.url}/@${owner}/web1/terminal?service=nope`);
    await page.locator('#banner.fatal').getByText(`runs no agent beside a service named 'nope'`).waitFor();
    await page.goto(`${server.url}/@${owner}/web1`);
    await page.getByRole('heading', { name: `${owner}/web1` }).waitFor();
  });

  it('stops (after confirming), starts and deletes the workspace, the page following along', async () => {
    // Escape closes the confirmation without stopping anything
    await page.getByRole('button', { name: 'Stop' }).click();
    await page.getByRole('dialog').waitFor();
    await page.keyboard.press('Escape');
    await page.getByRole('dialog').waitFor({ state: 'hidden' });
    expect((await api(server.app, await loginToken(server, owner, PASSWORD)).get(`/api/v1/workspaces/${owner}/web1`)).json.status).toBe('running');
    await page.getByRole('button', { name: 'Stop' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByText('the home directory is kept').waitFor();
    await dialog.getByRole('button', { name: 'Stop' }).click();
    await page.getByRole('heading', { name: `${owner}/web1` }).locator('xpath=..').locator('.status', { hasText: 'stopped' }).waitFor();
    await page.getByRole('button', { name: 'Start' }).click();
    await page.getByRole('heading', { name: `${owner}/web1` }).locator('xpath=..').locator('.status', { hasText: 'running' }).waitFor();
    // the list shows it live too
    await page.getByRole('link', { name: 'Workspaces' }).click();
    const row = page.getByTestId('workspaces').getByRole('row', { name: /web1/ });
    await row.getByText('running').waitFor();
    // a change made elsewhere (the CLI, another tab) shows without a reload, from the event stream
    const ownerApi = api(server.app, await loginToken(server, owner, PASSWORD));
    expect((await ownerApi.post(`/api/v1/workspaces/${owner}/web1/stop`, {})).status).toBe(202);
    await row.getByText('stopped').waitFor();
    expect((await ownerApi.post(`/api/v1/workspaces/${owner}/web1/start`, {})).status).toBe(202);
    await row.getByText('running').waitFor();
    await expectAccessible(page, 'workspaces');
    await screenshot(page, '07-workspaces');
    // a tablet's width: the same page, nothing wider than the screen
    await page.setViewportSize({ width: 768, height: 1024 });
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(768);
    await screenshot(page, '07-workspaces-tablet');
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.getByRole('link', { name: 'web1' }).click();
    await page.getByRole('button', { name: 'Delete' }).click();
    await page.getByRole('dialog').getByText('This cannot be undone.').waitFor();
    await page.getByRole('dialog').getByRole('button', { name: 'Delete' }).click();
    await page.waitForURL(/\/workspaces$/);
    // deleting takes a build; the list drops it when the event stream says it is gone
    await until('the workspace to leave the list', async () => !(await page.getByTestId('workspaces').textContent())?.includes('web1'));
  });

  it('shows a lost connection to den, keeps what was typed, and recovers', async () => {
    await page.getByRole('link', { name: 'New workspace' }).click();
    await page.getByLabel('Name').fill('typed-before');
    // a network drop: the browser goes offline and the server's end of every connection closes
    await context.setOffline(true);
    server.app.server.closeAllConnections();
    try {
      await page.getByText('The connection to den was lost').waitFor();
      await screenshot(page, '08-connection-lost');
    } finally {
      await context.setOffline(false);
    }
    await page.getByText('The connection to den was lost').waitFor({ state: 'hidden' });
    expect(await page.getByLabel('Name').inputValue()).toBe('typed-before');
  });

  it('lets the owner add a user and create an API token', async () => {
    await page.getByRole('link', { name: 'Users' }).click();
    const form = page.getByRole('form', { name: 'Add a user' });
    await form.getByLabel('Username').fill('mia');
    await form.getByLabel('Password').fill(MEMBER_PASSWORD);
    await form.getByRole('button', { name: 'Add user' }).click();
    await page.getByRole('row', { name: /mia/ }).waitFor();
    // a role change asks first; Cancel leaves it as it was
    const role = page.getByLabel('Role of mia');
    await role.selectOption('template-admin');
    await page.getByRole('dialog', { name: 'Make mia template-admin?' }).getByRole('button', { name: 'Cancel' }).click();
    expect(await role.inputValue()).toBe('member');
    await role.selectOption('template-admin');
    await page.getByRole('dialog', { name: 'Make mia template-admin?' }).getByRole('button', { name: 'Change the role' }).click();
    await until('the role change', async () => (await role.inputValue()) === 'template-admin');
    await role.selectOption('member');
    await page.getByRole('dialog', { name: 'Make mia member?' }).getByRole('button', { name: 'Change the role' }).click();
    await until('the role change back', async () => (await role.inputValue()) === 'member');
    // a group with mia in it (a teammate's view through it comes last)
    const groupForm = page.getByRole('form', { name: 'Create a group' });
    await groupForm.getByLabel('Group name').fill('dash-team');
    await groupForm.getByLabel('Description (optional)').fill('the dashboard testers');
    await groupForm.getByRole('button', { name: 'Create group' }).click();
    const group = page.getByTestId('groups').getByRole('row', { name: /dash-team/ });
    await group.getByLabel('User to add to dash-team').selectOption('mia');
    await group.getByRole('button', { name: 'Add to dash-team' }).click();
    await group.getByRole('button', { name: 'Remove mia from dash-team' }).waitFor();
    expect((await api(server.app, await loginToken(server, owner, PASSWORD)).get('/api/v1/groups/dash-team')).json.members).toEqual([expect.objectContaining({ user: 'mia', addedBy: owner })]);
    await expectAccessible(page, 'users');
    await screenshot(page, '09-users');
    await page.getByRole('link', { name: 'Settings' }).click();
    await page.getByLabel('Token name').fill('laptop');
    await page.getByRole('button', { name: 'Create a token' }).click();
    const token = await page.getByTestId('new-token').textContent();
    expect((await api(server.app, token!).get('/api/v1/users/me')).json.username).toBe(owner);
    await expectAccessible(page, 'settings');
  });

  it('keeps a member to their own workspaces and away from the admin pages', async () => {
    const ownerToken = await loginToken(server, owner, PASSWORD);
    const client = api(server.app, ownerToken);
    expect((await client.post('/api/v1/workspaces', { name: 'secret', template: 'webtest' })).status).toBe(202);
    const member = { username: 'mia', password: MEMBER_PASSWORD };
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(/\/login/);
    await page.getByLabel('Username').fill(member.username);
    await page.getByLabel('Password').fill('wrong-password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('alert').getByText('The username or password is wrong.').waitFor();
    expect(await page.getByLabel('Username').inputValue()).toBe(member.username);
    await page.getByLabel('Password').fill(member.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Workspaces' }).waitFor();
    expect(await page.getByTestId('workspaces').textContent()).not.toContain('secret');
    expect(await page.getByRole('link', { name: 'Templates' }).count()).toBe(0);
    expect(await page.getByRole('link', { name: 'Users' }).count()).toBe(0);

    await page.goto(`${server.url}/@${owner}/secret`);
    await page.getByRole('heading', { name: 'Not found' }).waitFor();
    expect(await page.locator('main').textContent()).toContain(`There is no workspace ${owner}/secret that you can see.`);
    await screenshot(page, '10-member-not-found');
    for (const path of ['/templates', '/users']) {
      await page.goto(`${server.url}${path}`);
      await page.getByRole('heading', { name: 'You do not have access to this page' }).waitFor();
    }
    await expectAccessible(page, 'forbidden');
  });

  it('shows a teammate through a group the environment read-only from "Shared with me", and its owner the environment with its teammates', async () => {
    const ownerToken = await loginToken(server, owner, PASSWORD);
    const ownerApi = api(server.app, ownerToken);
    await waitForWorkspaceReady(ownerApi, owner, 'secret', STEP_TIMEOUT_MS);
    // still a stranger to it: the environment's page is the not-found page
    await page.goto(`${server.url}/@${owner}/secret/env`);
    await page.getByRole('heading', { name: 'Not found' }).waitFor();
    expect(await page.locator('main').textContent()).toContain(`There is no environment of ${owner}/secret that you can see.`);

    // the owner runs the test (its service's agent may still be connecting) and grants the group made on the users page
    await until('a passed run of the smoke test', async () => {
      const ran = await server.app.inject({ method: 'POST', url: `/api/v1/workspaces/${owner}/secret/env/tests/smoke/run`, headers: { authorization: `Bearer ${ownerToken}` }, payload: {} });
      return ran.body.includes('"state":"passed"');
    });
    expect((await ownerApi.put(`/api/v1/workspaces/${owner}/secret/env/grants/groups/dash-team`)).status).toBe(200);

    await page.getByRole('link', { name: 'Shared with me' }).click();
    const shared = page.getByTestId('shared').getByRole('row', { name: new RegExp(`${owner}/secret`) });
    await shared.getByText('group dash-team').waitFor();
    await expectAccessible(page, 'shared-with-me');
    await shared.getByRole('link', { name: `${owner}/secret` }).click();
    await page.waitForURL(new RegExp(`/@${owner}/secret/env$`));
    await page.getByRole('heading', { name: `Environment of ${owner}/secret` }).waitFor();
    await page.getByTestId('read-only').waitFor();
    const ticker = page.getByTestId('env-services').getByRole('row', { name: /ticker/ });
    await ticker.locator('.status', { hasText: 'running' }).waitFor();
    expect(await ticker.textContent()).toMatch(/9000 \(metrics\)[\s\S]*[0-9a-f]{16}/);
    await page.getByTestId('env-tests').getByRole('row', { name: /smoke/ }).locator('.status', { hasText: 'passed' }).waitFor();
    await page.getByText('Nothing syncs into the services.').waitFor();
    await page.getByRole('button', { name: 'Follow the services\' logs' }).click();
    await page.getByTestId('env-logs').getByText(/ticker \| ticker-alive/).first().waitFor();
    // nothing of the workspace beyond its environment: no terminal, no run logs, no grants
    for (const hidden of ['Open a terminal', 'Grant', 'Show the log of this test run']) expect(await page.getByRole('button', { name: hidden }).count()).toBe(0);
    expect(await page.getByText('Teammates', { exact: true }).count()).toBe(0);
    await expectAccessible(page, 'environment-teammate');
    await screenshot(page, '11-environment-teammate');
    const events = (await ownerApi.get(`/api/v1/workspaces/${owner}/secret/events`)).json.events as { message: string }[];
    expect(events.map((event) => event.message)).toEqual(expect.arrayContaining([
      'Teammate mia viewed the environment: services and status.',
      'Teammate mia viewed the environment: sync state.',
      'Teammate mia viewed the environment: service logs.',
    ]));

    // the owner: the workspace page carries the environment, with its teammates, run history and grants
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.waitForURL(/\/login/);
    await page.getByLabel('Username').fill(owner);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Workspaces' }).waitFor();
    await page.goto(`${server.url}/@${owner}/secret`);
    const environment = page.getByTestId('environment');
    await environment.getByRole('heading', { name: 'Environment' }).waitFor();
    await environment.getByTestId('env-grants').getByRole('row', { name: /group dash-team/ }).waitFor();
    await environment.getByTestId('env-runs').getByRole('row', { name: /test smoke/ }).getByText('passed').waitFor();
    await environment.getByRole('button', { name: 'Show the log of this test run' }).first().click();
    await environment.getByText('smoke in ticker-role').waitFor();
    // run from the page: the passed result of this version answers at once, as cached
    await environment.getByRole('button', { name: 'Run smoke' }).click();
    await environment.getByTestId('env-run-now').getByText('(cached: a passed run of this version is kept)').waitFor();
    await environment.getByLabel('Username').fill('mia');
    await environment.getByRole('button', { name: 'Grant', exact: true }).click();
    await environment.getByTestId('env-grants').getByRole('row', { name: /^mia/ }).waitFor();
    await environment.getByRole('button', { name: 'Revoke group dash-team' }).click();
    await environment.getByTestId('env-grants').getByRole('row', { name: /group dash-team/ }).waitFor({ state: 'detached' });
    expect((await ownerApi.get(`/api/v1/workspaces/${owner}/secret/env/grants`)).json.grants).toEqual([expect.objectContaining({ user: 'mia', grantedBy: owner })]);
    await expectAccessible(page, 'workspace-environment');
    await screenshot(page, '12-environment-owner');
  });

  async function until(what: string, done: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (await done().catch(() => false)) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await screenshot(page, `timeout-${what.replace(/\W+/g, '-')}`).catch(() => undefined);
    throw new Error(`Timed out waiting for ${what}. Screen:\n${await screenOf(page).catch(() => '')}`);
  }
});

/** axe-core (injected from its package) on the page as it is: no serious or critical violation. */
async function expectAccessible(page: Page, name: string): Promise<void> {
  // evaluated through the DevTools protocol: the page's CSP (rightly) refuses inline scripts
  if (!(await page.evaluate(() => 'axe' in globalThis))) await page.evaluate(AXE_SOURCE);
  const violations = await page.evaluate(async () => {
    const result = await (globalThis as unknown as { axe: { run(context: Document, options: object): Promise<{ violations: { id: string; impact: string; help: string; nodes: { target: string[] }[] }[] }> } })
      .axe.run(document, { resultTypes: ['violations'] });
    return result.violations.map((violation) => ({ id: violation.id, impact: violation.impact, help: violation.help, nodes: violation.nodes.map((node) => node.target.join(' ')).slice(0, 5) }));
  });
  const serious = violations.filter((violation) => violation.impact === 'serious' || violation.impact === 'critical');
  expect(serious, `${name}: ${JSON.stringify(serious, null, 2)}`).toEqual([]);
}

async function loginToken(server: TestServer, username: string, password: string): Promise<string> {
  const response = await api(server.app).post('/api/v1/auth/login', { username, password, token: { name: 'test' } });
  expect(response.status).toBe(200);
  return response.json.token.token;
}
