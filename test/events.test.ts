import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { waitFor } from '../agent/terminal/testing.ts';
import { DenClient } from '../client/client.ts';
import { isDenApiError } from '../client/errors.ts';
import type { WorkspaceEvent } from '../protocol/events.ts';
import { storeDialects } from './support/postgres.ts';
import { startTestServer, unsandboxedProcessDriver, type TestServer } from './support/harness.ts';
import { idleDriver } from './support/idle-driver.ts';
import { waitForWorkspaceReady } from './support/templates.ts';
import { api, createUserWithToken, setupOwner, type TestUser } from './support/users.ts';

/**
 * The client event stream (GET /api/v1/events) against a real server, real agents on the
 * process runtime, both stores: a member sees the status, build progress and agent state of
 * their own workspaces and nothing of another member's, an owner sees everyone's; a revoked
 * token's stream ends with its coded error; a reader that stops reading is dropped with a
 * `dropped` event; `den list --watch` prints a status change.
 */

const READY_TIMEOUT_MS = 30_000;
/** Events reach a subscriber as soon as they are published; this only bounds a broken test. */
const EVENT_TIMEOUT_MS = 45_000;
const CLI_TIMEOUT_MS = 30_000;
const ROOT = resolve(import.meta.dirname, '..');

const template = { name: 'events', workspace: { image: 'den/base' } };

/** A subscriber reading in the background: what it received and how it ended. */
interface Subscriber {
  events: WorkspaceEvent[];
  ended: Promise<unknown>;
  close(): void;
}

function subscribe(server: TestServer, token: string): Subscriber {
  const controller = new AbortController();
  const events: WorkspaceEvent[] = [];
  const client = new DenClient({ url: server.url!, token });
  const ended = (async () => {
    for await (const event of client.workspaces.watch({ signal: controller.signal })) events.push(event);
  })().then(() => undefined, (error: unknown) => error);
  return { events, ended, close: () => controller.abort() };
}

describe.each(storeDialects)('the event stream on %s', { timeout: 120_000 }, (dialect) => {
  let server: TestServer;
  let owner: TestUser;
  let alice: TestUser;
  let bob: TestUser;
  const subscribers: Subscriber[] = [];

  beforeAll(async () => {
    server = await startTestServer({ dialect, listen: true, driver: unsandboxedProcessDriver });
    owner = await setupOwner(server.app);
    alice = await createUserWithToken(server.app, owner.token, 'member', 'alice');
    bob = await createUserWithToken(server.app, owner.token, 'member', 'bob');
    const pushed = await api(server.app, owner.token).post('/api/v1/templates', { files: { 'template.yaml': stringify(template) }, activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
  });
  afterAll(async () => {
    for (const subscriber of subscribers.splice(0)) subscriber.close();
    await server?.close();
  });

  it('a member sees create -> starting -> running with build progress of their own workspace, another member none of it, an owner both', async () => {
    // counted from here: the server may hold subscriptions of its own
    const before = server.den.events.subscribers;
    const forAlice = subscribe(server, alice.token);
    const forBob = subscribe(server, bob.token);
    const forOwner = subscribe(server, owner.token);
    subscribers.push(forAlice, forBob, forOwner);
    await waitFor(() => server.den.events.subscribers === before + 3, EVENT_TIMEOUT_MS, `three subscribers (${server.den.events.subscribers - before} so far, ${before} before)`);

    for (const [user, name] of [[alice, 'alice'], [bob, 'bob']] as const) {
      const created = await api(server.app, user.token).post('/api/v1/workspaces', { name: 'dev', template: 'events' });
      expect(created.status, JSON.stringify(created.json)).toBe(202);
    }
    const alicesId = (await waitForWorkspaceReady(api(server.app, alice.token), 'alice', 'dev', READY_TIMEOUT_MS)).id as string;
    const bobsId = (await waitForWorkspaceReady(api(server.app, bob.token), 'bob', 'dev', READY_TIMEOUT_MS)).id as string;

    const ran = (events: WorkspaceEvent[], id: string) =>
      events.some((e) => e.workspaceId === id && e.type === 'build' && e.state === 'succeeded')
      && events.some((e) => e.workspaceId === id && e.type === 'workspace.status' && e.status === 'running');
    await waitFor(() => ran(forAlice.events, alicesId) && ran(forBob.events, bobsId), EVENT_TIMEOUT_MS, 'each member to see their build succeed');
    await waitFor(() => ran(forOwner.events, alicesId) && ran(forOwner.events, bobsId), EVENT_TIMEOUT_MS, 'the owner to see both builds succeed');

    const statuses = forAlice.events.filter((e) => e.type === 'workspace.status').map((e) => e.type === 'workspace.status' && e.status);
    expect(statuses).toEqual(['starting', 'running']);
    const builds = forAlice.events.flatMap((e) => (e.type === 'build' ? [e.step ? `${e.step.name} ${e.step.state}` : e.state] : []));
    expect(builds.slice(0, 2)).toEqual(['queued', 'running']);
    expect(builds).toContain('apply succeeded');
    expect(builds).toContain('agent succeeded');
    expect(builds.at(-1)).toBe('succeeded');
    expect(forAlice.events.some((e) => e.type === 'agent' && e.state === 'ready')).toBe(true);
    // starting comes before the first step, running after the last
    const order = forAlice.events.map((e) => (e.type === 'workspace.status' ? e.status : e.type === 'build' && e.step ? e.step.name : ''));
    expect(order.indexOf('starting')).toBeLessThan(order.indexOf('apply'));
    expect(order.lastIndexOf('agent')).toBeLessThan(order.indexOf('running'));

    expect(forAlice.events.every((e) => e.workspaceId === alicesId)).toBe(true);
    expect(forBob.events.every((e) => e.workspaceId === bobsId)).toBe(true);
  });

  it('a revoked token\'s stream ends with UNAUTHENTICATED; other streams stay open', async () => {
    const created = await api(server.app, alice.token).post('/api/v1/users/me/tokens', { name: 'events' });
    expect(created.status, JSON.stringify(created.json)).toBe(201);
    const before = server.den.events.subscribers;
    const victim = subscribe(server, created.json.token);
    subscribers.push(victim);
    await waitFor(() => server.den.events.subscribers === before + 1, EVENT_TIMEOUT_MS, 'the new subscriber');

    expect((await api(server.app, alice.token).delete(`/api/v1/users/me/tokens/${created.json.id}`)).status).toBe(200);

    const ended = await victim.ended;
    expect(isDenApiError(ended) && ended.code).toBe('UNAUTHENTICATED');
    expect(server.den.events.subscribers).toBe(before);
  });

  it('a subscriber that stops reading is dropped with a final dropped event, and its buffer stays bounded', async () => {
    const before = server.den.events.subscribers;
    const response = await openRawStream(server, alice.token);
    response.pause();
    await waitFor(() => server.den.events.subscribers === before + 1, EVENT_TIMEOUT_MS, 'the slow subscriber');
    const workspaceId = (await api(server.app, alice.token).get('/api/v1/workspaces/alice/dev')).json.id as string;

    // Publish until the server gives up on the reader; yielding between batches lets the socket fill.
    let published = 0;
    while (server.den.events.subscribers > before) {
      for (let i = 0; i < 100; i++, published++) {
        server.den.events.publish({ type: 'agent', workspaceId, at: new Date().toISOString(), state: 'ready', message: 'x'.repeat(200) });
      }
      await new Promise((resolve) => setImmediate(resolve));
      if (published > 1_000_000) throw new Error('The slow subscriber was never dropped.');
    }

    response.setEncoding('utf8');
    let body = '';
    response.on('data', (chunk: string) => (body += chunk));
    response.resume();
    await new Promise((resolve) => response.once('end', resolve));
    const last = body.trimEnd().split('\n\n').at(-1)!;
    expect(last).toContain('event: dropped');
    expect(last).toContain('EVENTS_SUBSCRIBER_TOO_SLOW');
    // what the reader gets is what the sockets held plus the server's bounded buffer, not every event published
    expect(body.split('event: agent').length - 1).toBeLessThan(published);
  });

  it('`den list --watch` prints the table, then a status change, and exits on Ctrl-C', async () => {
    const home = mkdtempSync(join(tmpdir(), 'den-events-cli-'));
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'den.js'), 'list', '--watch'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: home, XDG_CONFIG_HOME: join(home, 'config'), DEN_URL: server.url!, DEN_TOKEN: alice.token, DEN_CLI_FROM_SOURCE: '1' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    try {
      const output = collect(child);
      const before = server.den.events.subscribers;
      await waitFor(() => output.stdout.includes('dev') && server.den.events.subscribers === before + 1, CLI_TIMEOUT_MS, `the table and a subscription (stderr: ${output.stderr})`);

      expect((await api(server.app, alice.token).post('/api/v1/workspaces/alice/dev/stop', {})).status).toBe(202);
      await waitFor(() => output.stdout.includes('alice/dev status stopped'), CLI_TIMEOUT_MS, 'the status change to be printed');
      expect(output.stdout).toContain('alice/dev status stopping');

      child.kill('SIGINT');
      const code = await new Promise((resolve) => child.once('close', resolve));
      expect(code, output.stderr).toBe(0);
    } finally {
      child.kill('SIGKILL');
      rmSync(home, { recursive: true, force: true });
    }
  });
});

describe.each(storeDialects)('the event stream of a canceled queued build on %s', (dialect) => {
  let server: TestServer;
  const subscribers: Subscriber[] = [];

  beforeAll(async () => {
    // no build workers: a build stays queued until it is canceled
    server = await startTestServer({ dialect, listen: true, driver: () => idleDriver, startWorkers: false });
  });
  afterAll(async () => {
    for (const subscriber of subscribers.splice(0)) subscriber.close();
    await server?.close();
  });

  it('shows the create as a queued build, then the build canceled and the workspace stopped', async () => {
    const owner = await setupOwner(server.app);
    const pushed = await api(server.app, owner.token).post('/api/v1/templates', { files: { 'template.yaml': stringify(template) }, activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    const watcher = subscribe(server, owner.token);
    subscribers.push(watcher);
    await waitFor(() => server.den.events.subscribers === 1, EVENT_TIMEOUT_MS, 'the subscriber');

    expect((await api(server.app, owner.token).post('/api/v1/workspaces', { name: 'queued', template: 'events' })).status).toBe(202);
    expect((await api(server.app, owner.token).post('/api/v1/workspaces/owner/queued/cancel', {})).status).toBe(202);

    await waitFor(() => watcher.events.some((e) => e.type === 'workspace.status'), EVENT_TIMEOUT_MS, 'the status change');
    expect(watcher.events.map((e) => (e.type === 'build' ? `build ${e.state}` : e.type === 'workspace.status' ? `status ${e.status}` : e.type)))
      .toEqual(['build queued', 'build canceled', 'status stopped']);
  });
});

function openRawStream(server: TestServer, token: string): Promise<IncomingMessage> {
  return new Promise((resolvePromise, reject) => {
    const request = httpRequest(`${server.url}/api/v1/events`, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } }, resolvePromise);
    request.on('error', reject);
    request.end();
  });
}

function collect(child: ChildProcessWithoutNullStreams): { stdout: string; stderr: string } {
  const output = { stdout: '', stderr: '' };
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output.stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output.stderr += chunk));
  child.stdin.end();
  return output;
}
