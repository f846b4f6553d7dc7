import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as pty from 'node-pty';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkUpgradeOrigin } from '../server/auth/authenticate.ts';
import { allowedOrigins } from '../protocol/origins.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { runDen, type DenResult } from './support/den-cli.ts';
import { readTemplateFolder, waitForWorkspaceReady } from './support/templates.ts';
import { api, setupOwner, type TestUser } from './support/users.ts';

/**
 * What a new user meets in their first ten minutes (issue 15), each as they would meet it: the
 * real `den` command, the real server process on a terminal and on a pipe, the HTTP answers.
 * The browser side (landing on setup, the terminal page under localhost, banners at 1100 px) is
 * in test/e2e/dashboard.test.ts.
 */

const ROOT = resolve(import.meta.dirname, '..');
const DEN = join(ROOT, 'bin', 'den.js');
const COMMAND_TIMEOUT_MS = 60_000;

let work: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'den-first-minutes-'));
});
afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

function den(args: string[], env: Record<string, string> = {}): Promise<DenResult> {
  return runDen(args, { PATH: process.env.PATH!, HOME: work, XDG_CONFIG_HOME: join(work, 'config'), ...env }, COMMAND_TIMEOUT_MS);
}

describe('a fresh server', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ listen: true, startWorkers: false });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('lands / on the dashboard page instead of a JSON 404', async () => {
    const response = await fetch(`${server.url}/`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/html; charset=utf-8');
    const html = await response.text();
    expect(html).toContain('<div id="root">');
    expect(html).toMatch(/<script type="module"[^>]+src="\/web\/[^"]+\/assets\/index-[^"]+\.js"/);
  });

  it('answers a sign-in with the truth: there are no users yet, and how to create the first', async () => {
    const response = await api(server.app).post('/api/v1/auth/login', { username: 'admin', password: 'whatever-password' });
    expect(response.status).toBe(409);
    expect(response.json.error.code).toBe('SETUP_REQUIRED');
    expect(response.json.error.message).toBe(
      `This den server has no users yet. Create the first (owner) account: open ${server.url}/ in a browser, or run \`den login ${server.url} --first-user-username NAME --first-user-password PASSWORD\`.`,
    );
  });
});

describe('a server with users', () => {
  let server: TestServer;
  let owner: TestUser;
  beforeAll(async () => {
    server = await startTestServer({ listen: true });
    owner = await setupOwner(server.app);
  });
  afterAll(async () => {
    await server?.close();
  });

  it('still says a wrong password is wrong', async () => {
    const response = await api(server.app).post('/api/v1/auth/login', { username: owner.username, password: 'not-the-password' });
    expect({ status: response.status, code: response.json.error.code }).toEqual({ status: 401, code: 'INVALID_CREDENTIALS' });
  });

  it('den login --first-user-* says the server is set up and how to sign in, when those credentials are not an account', async () => {
    const result = await den(['login', server.url!, '--first-user-username', 'admin', '--first-user-password', 'another-password']);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `den: ${server.url} is already set up (it has users), so --first-user-* signed in as 'admin' instead, and that username or password is wrong. ` +
        `Sign in with an existing account: \`den login ${server.url} --username NAME\` (ask an owner of the server for one).\n`,
    );
    // the same line with the owner's credentials signs in (scripts run it twice)
    const again = await den(['login', server.url!, '--first-user-username', owner.username, '--first-user-password', owner.password]);
    expect(again.stderr).toBe('');
    expect(again.stdout).toContain(`Logged in to ${server.url} as ${owner.username}.`);
  });

  it('returns the active version for an identical push, and stores a changed folder as a new one', async () => {
    const client = api(server.app, owner.token);
    const files = readTemplateFolder(join(ROOT, 'templates', 'starter'));
    const first = await client.post('/api/v1/templates', { files, activate: true });
    expect(first.status).toBe(201);
    const number = first.json.version.number;
    expect(first.json.unchanged).toBe(false);
    const created = await client.post('/api/v1/workspaces', { name: 'same', template: 'starter' });
    expect(created.status).toBe(202);

    const again = await client.post('/api/v1/templates', { files, activate: true, message: 'pushed again' });
    expect(again.status).toBe(200);
    expect(again.json).toMatchObject({ unchanged: true, created: false, version: { number, active: true } });
    expect((await client.get('/api/v1/templates/starter')).json.versions).toBe(number);
    expect((await client.get(`/api/v1/workspaces/${owner.username}/same`)).json.outdated).toBe(false);

    const changed = await client.post('/api/v1/templates', { files: { ...files, 'NOTES.md': 'a change\n' }, activate: true });
    expect(changed.status).toBe(201);
    expect(changed.json).toMatchObject({ unchanged: false, version: { number: number + 1, active: true } });
    expect((await client.get(`/api/v1/workspaces/${owner.username}/same`)).json.outdated).toBe(true);

    // the CLI says nothing was pushed
    const cli = await den(['templates', 'push', join(ROOT, 'templates', 'starter'), '--activate'], { DEN_URL: server.url!, DEN_TOKEN: owner.token });
    expect(cli.code).toBe(0);
    expect(cli.stdout).toBe(`Pushed starter version ${number + 2} (active).\n`);
    const cliAgain = await den(['templates', 'push', join(ROOT, 'templates', 'starter'), '--activate'], { DEN_URL: server.url!, DEN_TOKEN: owner.token });
    expect(cliAgain.stdout).toBe(`starter version ${number + 2} (active) already has these files; nothing was pushed.\n`);
  });

  it('den show prints the URLs to open, the apps and the services', async () => {
    const client = api(server.app, owner.token);
    const created = await client.post('/api/v1/workspaces', { name: 'shown', template: 'starter' });
    expect(created.status).toBe(202);
    await waitForWorkspaceReady(client, owner.username, 'shown', 30_000);
    const result = await den(['show', 'shown'], { DEN_URL: server.url!, DEN_TOKEN: owner.token });
    expect(result.stderr).toBe('');
    const base = `${server.url}/@${owner.username}/shown`;
    expect(result.stdout).toContain(`\nOpen:\n  dashboard  ${base}\n  terminal   ${base}/terminal\n`);
    expect(result.stdout).toContain(`\nApps (\`den ports WORKSPACE\` lists every listening port; \`den share\` shares them):\n  web  ${base}/apps/web/  port 8080, shared with owner  Web (port 8080)\n`);
  });
});

describe('the den command', () => {
  it('lists `server` in its help, `den help server` prints the server\'s options, and the docs name no command or folder that does not exist', async () => {
    const help = await den(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/\n {2}server\s+Start the den server \(the control plane\)/);
    // the docs name only commands that exist, or say that one is coming
    const commands = new Set([...help.stdout.matchAll(/^ {2}([a-z]+)(?:\|([a-z]+))?/gm)].flatMap((match) => [match[1], match[2]]));
    for (const file of ['README.md', 'templates/node-api/README.md', 'templates/starter/README.md', 'docs/terminal.md', 'docs/templates.md', 'docs/docker.md', 'docs/security.md']) {
      for (const line of readFileSync(join(ROOT, file), 'utf8').split('\n')) {
        if (/coming|no `den /.test(line)) continue;
        for (const [, command] of line.matchAll(/`den ([a-z]+)/g)) expect(commands, `${file}: ${line}`).toContain(command);
      }
    }
    // and only folders that exist
    for (const [, folder] of readFileSync(join(ROOT, 'README.md'), 'utf8').matchAll(/`([a-z-]+)\/`/g)) expect(existsSync(join(ROOT, folder)), folder).toBe(true);
    const serverHelp = await den(['help', 'server']);
    expect(serverHelp.code).toBe(0);
    expect(serverHelp.stdout).toMatch(/^Usage: den server \[options\]\n/);
    expect(serverHelp.stdout).toContain('--listen HOST:PORT');
  });
});

describe('den server started by hand', () => {
  it('on a terminal: a banner with the URL and the first-user command, and readable log lines', async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const child = pty.spawn(process.execPath, [DEN, 'server', '--listen', `127.0.0.1:${port}`, '--data-dir', join(work, 'tty')], {
      cwd: ROOT, env: { PATH: process.env.PATH!, HOME: work }, cols: 160, rows: 40, name: 'xterm-256color',
    });
    let output = '';
    child.onData((data) => (output += data));
    try {
      await until(() => output.includes('Stop it with Ctrl+C.'), () => output);
      const text = stripAnsi(output);
      expect(text).toContain(`den is running at ${url}/`);
      expect(text).toContain(`Open ${url}/ in a browser to create the first (owner) account,`);
      expect(text).toContain(`den login ${url} --first-user-username NAME --first-user-password PASSWORD`);
      // pino-pretty: "[HH:MM:SS] INFO: den is listening ...", not JSON
      expect(text).toMatch(/\[\d\d:\d\d:\d\d\] INFO: den is listening/);
      expect(text).not.toContain('{"level":');
    } finally {
      child.kill('SIGTERM');
    }
  });

  it('on a pipe: JSON log lines and no banner, as log collectors expect', async () => {
    const port = await freePort();
    const child = spawn(process.execPath, [DEN, 'server', '--listen', `127.0.0.1:${port}`, '--data-dir', join(work, 'pipe')], {
      cwd: ROOT, env: { PATH: process.env.PATH!, HOME: work }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    try {
      await until(() => output.includes('den is listening'), () => output);
      const lines = output.trim().split('\n');
      for (const line of lines) expect(() => JSON.parse(line), line).not.toThrow();
      expect(lines.map((line) => JSON.parse(line).msg)).toContain('den is listening');
      expect(output).not.toContain('den is running at');
    } finally {
      child.kill('SIGTERM');
    }
  });
});

describe('loopback names of the access URL', () => {
  const session = { principal: {}, session: { idHash: 'x', csrfToken: 'y' } } as never;

  it('accepts the terminal socket from localhost, 127.0.0.1 and [::1] on the same port when the access URL is one of them', () => {
    expect(allowedOrigins('http://127.0.0.1:7080')).toEqual(['http://127.0.0.1:7080', 'http://localhost:7080', 'http://[::1]:7080']);
    for (const origin of ['http://localhost:7080', 'http://127.0.0.1:7080', 'http://[::1]:7080']) {
      expect(() => checkUpgradeOrigin(session, origin, 'http://127.0.0.1:7080'), origin).not.toThrow();
    }
    for (const origin of ['http://localhost:7081', 'https://localhost:7080', 'http://evil.example', 'http://127.0.0.1.evil.example:7080']) {
      expect(() => checkUpgradeOrigin(session, origin, 'http://127.0.0.1:7080'), origin).toThrow(/not from http:\/\/127\.0\.0\.1:7080/);
    }
  });

  it('keeps a public access URL to its own origin', () => {
    expect(allowedOrigins('https://den.example.com')).toEqual(['https://den.example.com']);
    expect(() => checkUpgradeOrigin(session, 'http://localhost', 'https://den.example.com')).toThrow();
  });
});

function freePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolvePort(port));
    });
  });
}

async function until(done: () => boolean, shown: () => string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting; the output was:\n${shown()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function stripAnsi(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
}
