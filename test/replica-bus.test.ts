import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { stringify } from 'yaml';
import { waitFor } from '../agent/terminal/testing.ts';
import { DenClient } from '../client/client.ts';
import type { WorkspaceEvent } from '../protocol/events.ts';
import { LISTEN_APPLICATION_NAME } from '../server/store/pg-notify.ts';
import { openFollowedLog } from './support/follow.ts';
import { postgresSkipReason } from './support/postgres.ts';
import { startTestServer, unsandboxedProcessDriver, type TestServer } from './support/harness.ts';
import { waitForWorkspaceReady } from './support/templates.ts';
import { api, createUserWithToken, setupOwner, type TestUser } from './support/users.ts';

/**
 * Two den servers on one PostgreSQL database share their event and revocation buses over
 * LISTEN/NOTIFY: an event published on A reaches a `GET /api/v1/events` subscriber on B, and a
 * token revoked on A ends a build-log follow opened on B and is refused by B at once. Real
 * servers, a real agent on the process runtime. Server B runs no build workers, so every event of
 * the workspace comes from A.
 */

const READY_TIMEOUT_MS = 30_000;
/** Events and revocations cross replicas as soon as PostgreSQL delivers the NOTIFY; this bounds a broken test. */
const CROSS_REPLICA_TIMEOUT_MS = 5_000;
const OPEN_TIMEOUT_MS = 15_000;
/** A build number no worker touches: its follow stays open as long as the access does. */
const RUNNING_BUILD = 99;

/** The LISTEN connection retries within its backoff's first steps (100 ms doubling, with jitter). */
const RECONNECT_TIMEOUT_MS = 10_000;
/** What each test opened (subscribers, follows), closed at the end whatever happened. */
const cleanup: (() => void)[] = [];

if (postgresSkipReason) console.warn(`[skip] replicas sharing buses over PostgreSQL: ${postgresSkipReason}`);

describe.skipIf(postgresSkipReason !== undefined)('two replicas on one PostgreSQL database', () => {
  let a: TestServer;
  let b: TestServer;
  let owner: TestUser;
  let alice: TestUser;

  beforeAll(async () => {
    a = await startTestServer({ dialect: 'postgres', listen: true, driver: unsandboxedProcessDriver });
    b = await startTestServer({ databaseUrl: a.config.databaseUrl, listen: true, startWorkers: false, driver: unsandboxedProcessDriver });
    owner = await setupOwner(a.app);
    alice = await createUserWithToken(a.app, owner.token, 'member', 'alice');
    const pushed = await api(a.app, owner.token).post('/api/v1/templates', { files: { 'template.yaml': stringify({ name: 'replicas', workspace: { image: 'den/base' } }) }, activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
  });
  afterAll(async () => {
    for (const close of cleanup.splice(0)) close();
    // B first: A created the database and drops it on close
    await b?.close();
    await a?.close();
  });

  it('a subscriber on B sees the status of a workspace created through A, and each replica\'s subscriber each event once', async () => {
    const onA = await subscribe(a, alice.token);
    const onB = await subscribe(b, alice.token);

    const created = await api(a.app, alice.token).post('/api/v1/workspaces', { name: 'dev', template: 'replicas' });
    expect(created.status, JSON.stringify(created.json)).toBe(202);
    const workspace = await waitForWorkspaceReady(api(a.app, alice.token), 'alice', 'dev', READY_TIMEOUT_MS);

    await waitFor(() => statuses(onB).includes('running'), CROSS_REPLICA_TIMEOUT_MS, 'B\'s subscriber to see the workspace running');
    await waitFor(() => statuses(onA).includes('running'), CROSS_REPLICA_TIMEOUT_MS, 'A\'s subscriber to see the workspace running');
    expect(statuses(onB)).toEqual(['starting', 'running']);
    // A's own events come back to A as NOTIFYs too: they must not reach its subscribers twice
    expect(statuses(onA)).toEqual(['starting', 'running']);
    expect(onB.every((e) => e.workspaceId === workspace.id)).toBe(true);
  });

  it('events cross again after PostgreSQL ended the LISTEN connections', async () => {
    const onB = await subscribe(b, alice.token);
    const admin = a.store.db;
    const listeners = async () => (await sql<{ pid: number }>`select pid from pg_stat_activity
      where datname = current_database() and application_name = ${LISTEN_APPLICATION_NAME} and query like 'LISTEN%'`.execute(admin)).rows.map((row) => row.pid);
    const ended = await listeners();
    expect(ended).toHaveLength(2);
    await sql`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = ${LISTEN_APPLICATION_NAME}`.execute(admin);

    // new backends: a terminated one may still show in pg_stat_activity for a moment after the call
    await waitForAsync(async () => (await listeners()).filter((pid) => !ended.includes(pid)).length === 2, RECONNECT_TIMEOUT_MS, 'both replicas to LISTEN again');
    const workspace = (await api(a.app, alice.token).get('/api/v1/workspaces/alice/dev')).json;
    // B's new connection shows as listening from its first LISTEN on, and a NOTIFY sent before
    // the LISTEN of the events channel committed is not delivered to it: send until one crosses
    const crossed = () => onB.some((e) => e.type === 'agent' && e.message === 'after the reconnect');
    await waitForAsync(async () => {
      if (!crossed()) a.den.events.publish({ type: 'agent', workspaceId: workspace.id, at: new Date().toISOString(), state: 'recovered', message: 'after the reconnect' });
      return crossed();
    }, CROSS_REPLICA_TIMEOUT_MS, 'B\'s subscriber to see an event sent after the reconnect');
  });

  it('an event too large for a NOTIFY reaches B with its message cut, and A\'s subscriber whole', async () => {
    const onA = await subscribe(a, alice.token);
    const onB = await subscribe(b, alice.token);
    const workspace = (await api(a.app, alice.token).get('/api/v1/workspaces/alice/dev')).json;
    const message = `a long agent message: ${'x'.repeat(10_000)}`;
    a.den.events.publish({ type: 'agent', workspaceId: workspace.id, at: new Date().toISOString(), state: 'down', message });

    const long = (events: WorkspaceEvent[]) => events.find((e) => e.type === 'agent' && e.message?.startsWith('a long agent message'));
    await waitFor(() => long(onB) !== undefined, CROSS_REPLICA_TIMEOUT_MS, 'B\'s subscriber to see the long event');
    expect(long(onB)).toMatchObject({ state: 'down', message: message.slice(0, 1_000) });
    await waitFor(() => long(onA) !== undefined, CROSS_REPLICA_TIMEOUT_MS, 'A\'s subscriber to see the long event');
    expect(long(onA)).toMatchObject({ message });
  });

  it('a token revoked on A ends a build-log follow on B and is refused by B at once', async () => {
    const workspace = (await api(a.app, alice.token).get('/api/v1/workspaces/alice/dev')).json;
    await seedRunningBuild(a, workspace.id, alice.userId);
    const made = await api(a.app, alice.token).post('/api/v1/users/me/tokens', { name: 'revocable' });
    expect(made.status, JSON.stringify(made.json)).toBe(201);
    expect((await api(b.app, made.json.token).get('/api/v1/users/me')).status).toBe(200);

    const follow = await openFollowedLog(`${b.url}/api/v1/workspaces/alice/dev/builds/${RUNNING_BUILD}/logs?follow=1`, { authorization: `Bearer ${made.json.token}` }, 'build log');
    cleanup.push(follow.close);
    expect((await api(a.app, alice.token).delete(`/api/v1/users/me/tokens/${made.json.id}`)).status).toBe(200);

    await waitFor(() => !follow.isOpen(), CROSS_REPLICA_TIMEOUT_MS, 'the follow on B to end');
    expect((await follow.ended).errorCode).toBe('UNAUTHENTICATED');
    expect((await api(b.app, made.json.token).get('/api/v1/users/me')).status).toBe(401);
  });
});

/** A `GET /api/v1/events` subscriber on `server`, reading in the background until the test ends. */
async function subscribe(server: TestServer, token: string): Promise<WorkspaceEvent[]> {
  const controller = new AbortController();
  cleanup.push(() => controller.abort());
  const events: WorkspaceEvent[] = [];
  const before = server.den.events.subscribers;
  void (async () => {
    for await (const event of new DenClient({ url: server.url!, token }).workspaces.watch({ signal: controller.signal })) events.push(event);
  })().catch(() => undefined);
  await waitFor(() => server.den.events.subscribers === before + 1, OPEN_TIMEOUT_MS, `a subscriber on ${server.url}`);
  return events;
}

function statuses(events: WorkspaceEvent[]): string[] {
  return events.flatMap((e) => (e.type === 'workspace.status' ? [e.status] : []));
}

async function waitForAsync(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}.`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A build that is running and leased to nobody (so no worker takes it), with one line logged. */
async function seedRunningBuild(server: TestServer, workspaceId: string, userId: string): Promise<void> {
  const db = server.store.db;
  const first = await db.selectFrom('builds').selectAll().where('workspace_id', '=', workspaceId).orderBy('number').executeTakeFirstOrThrow();
  await db.insertInto('builds').values({
    ...first, id: crypto.randomUUID(), number: RUNNING_BUILD, transition: 'start', reason: 'test', initiator_id: userId, state: 'running', error: null,
    lease_owner: null, lease_expires_at: null, finished_at: null,
  }).execute();
  const build = await db.selectFrom('builds').select('id').where('workspace_id', '=', workspaceId).where('number', '=', RUNNING_BUILD).executeTakeFirstOrThrow();
  server.den.builds.logs.append(build.id, { stream: 'system', line: 'a build that never ends' });
  await server.den.builds.logs.flush();
}
