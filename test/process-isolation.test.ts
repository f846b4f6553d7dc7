import { readFileSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { pino } from 'pino';
import { createProcessDriver } from '../server/runtimes/process/driver.ts';
import { bwrapAvailable } from '../server/runtimes/process/sandbox.ts';
import { readState, WORKSPACE_UID_BASE, workspacePaths } from '../server/runtimes/process/state.ts';
import { execInWorkspace } from './support/exec.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { waitForWorkspaceReady } from './support/templates.ts';
import { api, createUserWithToken, setupOwner, type Api } from './support/users.ts';

/**
 * The process runtime's sandbox, probed the way an attacker in one workspace would: enumerate
 * the listening sockets it can see and connect to every one, plus den's own port and another
 * member's database service; look for host secrets and den's checkout.
 */

const READY_TIMEOUT_MS = 20_000;
/** the agent redials with a jittered backoff that stays under a few seconds */
const RECONNECT_TIMEOUT_MS = 20_000;
const CHECKOUT = resolve(import.meta.dirname, '..');

const TEMPLATE = `name: isolated
workspace:
  image: den/node:24
  env:
    DB_URL: "\${{ services.db.url }}"
environment:
  services:
    db:
      image: den/node:24
      command: [node, -e, "require('http').createServer((q, s) => s.end('secret of ' + process.env.OWNER)).listen(Number(process.env.PORT))"]
      env: { OWNER: "\${{ owner.name }}" }
      ports: [{ port: 5432 }]
      readiness: { tcp: 5432, timeout: 10s, interval: 50ms }
`;

/** Lists every listening TCP port in /proc/net/tcp{,6}, adds the given ones, and reports which accept a connection. */
const PROBE = `
const fs = require('node:fs'), net = require('node:net');
const ports = new Set(JSON.parse(process.argv[1]));
for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
  for (const line of fs.readFileSync(file, 'utf8').split('\\n').slice(1)) {
    const fields = line.trim().split(/\\s+/);
    if (fields[3] === '0A') ports.add(parseInt(fields[1].split(':').pop(), 16));
  }
}
const tryPort = (host, port) => new Promise((done) => {
  const socket = net.connect({ host, port });
  socket.setTimeout(1000, () => { socket.destroy(); done(false); });
  socket.once('connect', () => { socket.destroy(); done(true); });
  socket.once('error', () => done(false));
});
(async () => {
  const open = [];
  for (const port of ports) if (await tryPort('127.0.0.1', port) || await tryPort('::1', port)) open.push(port);
  process.stdout.write(JSON.stringify({ tried: [...ports], open }));
})();
`;

describe.skipIf(!bwrapAvailable())('process runtime isolation (bubblewrap)', () => {
  let server: TestServer;
  let alice: { client: Api; id: string };
  let bob: { client: Api; id: string };

  beforeAll(async () => {
    server = await startTestServer({ listen: true });
    const owner = await setupOwner(server.app);
    const ownerClient = api(server.app, owner.token);
    const pushed = await ownerClient.post('/api/v1/templates', { files: { 'template.yaml': TEMPLATE }, activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    const start = async (username: string) => {
      const user = await createUserWithToken(server.app, owner.token, 'member', username);
      const client = api(server.app, user.token);
      const created = await client.post('/api/v1/workspaces', { name: 'dev', template: 'isolated' });
      expect(created.status, JSON.stringify(created.json)).toBe(202);
      const workspace = await waitForWorkspaceReady(client, username, 'dev', READY_TIMEOUT_MS);
      return { client, id: workspace.id as string };
    };
    [alice, bob] = await Promise.all([start('alice'), start('bob')]);
  });
  afterAll(async () => {
    if (!restarted) return server?.close();
    // The restarted server does not own the data dir: remove its workspaces and the dir here.
    const context = { log: () => {}, signal: new AbortController().signal };
    for (const id of await server.den.driver.listWorkspaceIds()) {
      await server.den.driver.delete({ id, name: id, ownerId: '', ownerName: '' }, context);
    }
    await server.close();
    rmSync(server.dataDir, { recursive: true, force: true });
  });
  let restarted = false;

  const exec = (id: string, command: string[]) => execInWorkspace(server.den, id, command);
  const servicePort = (id: string) => readState(workspacePaths(server.dataDir, id)).ports.db['5432'];

  it('reaches nothing of den or of another workspace from a workspace, only its own services', async () => {
    const denPort = Number(new URL(server.url!).port);
    const targets = [denPort, servicePort(alice.id)];
    const probe = await exec(bob.id, ['node', '-e', PROBE, JSON.stringify(targets)]);
    expect(probe.code, probe.stderr).toBe(0);
    const { tried, open } = JSON.parse(probe.stdout) as { tried: number[]; open: number[] };
    expect(tried).toEqual(expect.arrayContaining([...targets, servicePort(bob.id)]));
    expect(open).toEqual([servicePort(bob.id)]);

    // ...and its own service answers at the URL den gave it.
    const own = await exec(bob.id, ['node', '-e', 'fetch(process.env.DB_URL).then((r) => r.text()).then((t) => process.stdout.write(t))']);
    expect(own).toMatchObject({ code: 0, stdout: 'secret of bob' });
  });

  it('runs workspace code as an unprivileged user that cannot read host secrets or write host files', async () => {
    expect(await exec(bob.id, ['id', '-u'])).toMatchObject({ code: 0, stdout: '1000\n' });
    expect((await exec(bob.id, ['cat', '/etc/shadow'])).code).not.toBe(0);
    expect((await exec(bob.id, ['sh', '-c', 'touch /etc/den-was-here || touch /usr/den-was-here'])).code).not.toBe(0);
    if (process.getuid?.() === 0) {
      // Outside, each workspace is a uid of its own, which owns its home.
      const aliceUid = statSync(workspacePaths(server.dataDir, alice.id).home).uid;
      const bobUid = statSync(workspacePaths(server.dataDir, bob.id).home).uid;
      expect(aliceUid).toBeGreaterThanOrEqual(WORKSPACE_UID_BASE);
      expect(bobUid).toBeGreaterThanOrEqual(WORKSPACE_UID_BASE);
      expect(aliceUid).not.toBe(bobUid);
    }
  });

  it('shows neither den\'s checkout nor its data dir inside the sandbox', async () => {
    for (const path of [join(CHECKOUT, '.git'), join(CHECKOUT, 'server'), join(CHECKOUT, 'package.json'), server.dataDir]) {
      expect((await exec(bob.id, ['test', '-e', path])).code, path).toBe(1);
    }
    // The agent runs from the bundle mounted on its own.
    expect((await exec(bob.id, ['test', '-f', '/run/den/agent/agent.mjs'])).code).toBe(0);
  });

  it('connects the agent through its workspace\'s socket, which serves the agent link and only for that workspace', async () => {
    expect(await exec(bob.id, ['sh', '-c', 'echo "$DEN_AGENT_SOCKET"; test -S "$DEN_AGENT_SOCKET"'])).toMatchObject({ code: 0, stdout: '/run/den/socket/agent.sock\n' });
    const aliceSocket = join(workspacePaths(server.dataDir, alice.id).socketDir, 'agent.sock');

    // Nothing but the agent link: not the API, not health.
    const health = await new Promise<number>((done, fail) => {
      request({ socketPath: aliceSocket, path: '/healthz' }, (response) => { response.resume(); done(response.statusCode!); }).on('error', fail).end();
    });
    expect(health).toBe(404);

    // Bob's agent token (readable by bob's workspace code in his agent's environment) on alice's socket.
    const bobAgent = readState(workspacePaths(server.dataDir, bob.id)).agent!;
    const bobToken = readFileSync(`/proc/${bobAgent.pid}/environ`, 'utf8').split('\0').find((entry) => entry.startsWith('DEN_AGENT_TOKEN='))!.slice('DEN_AGENT_TOKEN='.length);
    const refused = await new Promise<number>((done) => {
      const socket = new WebSocket(`ws+unix://${aliceSocket}:/api/v1/agent/connect`, { headers: { authorization: `Bearer ${bobToken}` } });
      socket.once('unexpected-response', (_request, response) => { done(response.statusCode!); socket.terminate(); });
      socket.once('open', () => { done(101); socket.close(); });
      socket.once('error', () => undefined);
    });
    expect(refused).toBe(401);
    expect(server.den.agents.isConnected(alice.id)).toBe(true);
  });

  it('reconnects the agents through their sockets after den restarts, even on another port', async () => {
    const dataDir = server.dataDir;
    await server.app.close();
    await server.den.driver.close();
    await server.store.close();
    restarted = true;
    server = await startTestServer({ dataDir, listen: true });
    await waitFor(() => server.den.agents.isConnected(alice.id) && server.den.agents.isConnected(bob.id), RECONNECT_TIMEOUT_MS);
    expect(await exec(bob.id, ['sh', '-c', 'echo back'])).toMatchObject({ code: 0, stdout: 'back\n' });
  });
});

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`The condition did not hold within ${timeoutMs} ms.`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('process runtime without bubblewrap', () => {
  it('warns at start, naming the risk and the setting, says so on every workspace it shows, and still connects agents', async () => {
    const warnings: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => warnings.push(JSON.parse(line).msg) });
    const server = await startTestServer({ listen: true, driver: (config) => createProcessDriver({ dataDir: config.dataDir, log, requireSandbox: false, sandbox: false }) });
    try {
      expect(warnings).toEqual([expect.stringMatching(/NOT isolated.*den's data dir.*host's network.*DEN_REQUIRE_SANDBOX=true/)]);
      const owner = await setupOwner(server.app);
      const client = api(server.app, owner.token);
      expect((await client.post('/api/v1/templates', { files: { 'template.yaml': 'name: open\nworkspace:\n  image: den/node:24\n' }, activate: true })).status).toBe(201);
      expect((await client.post('/api/v1/workspaces', { name: 'open', template: 'open' })).status).toBe(202);
      const workspace = await waitForWorkspaceReady(client, owner.username, 'open', READY_TIMEOUT_MS);
      const shown = await client.get(`/api/v1/workspaces/${owner.username}/open`);
      expect(shown.json.isolation).toEqual({ sandboxed: false, warning: warnings[0] });
      // The agent dials its socket at the host path (there is no sandbox to mount it into).
      const socket = await execInWorkspace(server.den, workspace.id, ['sh', '-c', 'echo "$DEN_AGENT_SOCKET"']);
      expect(socket.stdout.trim()).toBe(join(workspacePaths(server.dataDir, workspace.id).socketDir, 'agent.sock'));
    } finally {
      await server.close();
    }
  });
});
