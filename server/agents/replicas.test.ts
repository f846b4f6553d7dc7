import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';

import { createTestDatabase, storeDialects } from '../../test/support/postgres.ts';
import { openStore, type Store } from '../store/connect.ts';
import { createReplicas, type Replicas } from './replicas.ts';

/** The heartbeat in these tests: short, so a takeover happens within a test's patience. */
const HEARTBEAT_MS = 20;
const CONDITION_TIMEOUT_MS = 5_000;
const log = pino({ level: 'silent' });

describe.each(storeDialects)('replicas on %s', (dialect) => {
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  async function store(): Promise<Store> {
    const database = dialect === 'postgres' ? await createTestDatabase() : undefined;
    const opened = await openStore(database ? { databaseUrl: database.url } : { sqlitePath: ':memory:' });
    cleanups.push(async () => {
      await opened.close();
      await database?.drop();
    });
    return opened;
  }

  /** A replica whose clock the test sets (the heartbeat itself runs on real timers). */
  function replica(db: Store, url: string, clock: { now: number }): Replicas {
    const created = createReplicas({ db: db.db, clock: { now: () => new Date(clock.now) }, url, log, heartbeatMs: HEARTBEAT_MS });
    cleanups.push(() => created.stop());
    return created;
  }

  it('finds the replica that holds an agent, and accepts a peer only with its own secret', async () => {
    const db = await store();
    const clock = { now: Date.parse('2026-12-06T12:00:00Z') };
    const a = replica(db, 'http://a', clock);
    const b = replica(db, 'http://b', clock);
    await a.start();
    await b.start();
    a.holdAgent('agent-1');
    await waitForAsync(async () => (await b.locate('agent-1'))?.url === 'http://a', 'B to find the agent on A');
    expect(await a.locate('agent-1')).toBeUndefined(); // held here: nothing to relay to

    expect(await b.verifyPeer(a.id, a.secret)).toEqual({ id: a.id, url: 'http://a' });
    expect(await b.verifyPeer(a.id, b.secret)).toBeUndefined();
    expect(await b.verifyPeer(a.id, `${a.secret}x`)).toBeUndefined();
    expect(await b.verifyPeer('no-such-replica', a.secret)).toBeUndefined();
    expect(await a.verifyPeer(a.id, a.secret)).toBeUndefined(); // a replica does not dial itself
    const row = await db.db.selectFrom('replicas').select('secret_hash').where('id', '=', a.id).executeTakeFirstOrThrow();
    expect(row.secret_hash).toMatch(/^[0-9a-f]{64}$/);

    a.releaseAgent('agent-1');
    await waitForAsync(async () => (await b.locate('agent-1', { fresh: true })) === undefined, 'the agent record to go');
  });

  it('reports a dead replica\'s agents to one survivor, and the replica comes back if it was only stalled', async () => {
    const db = await store();
    const stalled = { now: Date.parse('2026-12-06T12:00:00Z') };
    const others = { now: stalled.now };
    const a = replica(db, 'http://a', stalled);
    const b = replica(db, 'http://b', others);
    const c = replica(db, 'http://c', others);
    const lost: { by: string; keys: string[] }[] = [];
    b.onReplicaLost((keys) => lost.push({ by: 'b', keys }));
    c.onReplicaLost((keys) => lost.push({ by: 'c', keys }));
    for (const r of [a, b, c]) await r.start();
    a.holdAgent('agent-1');
    a.holdAgent('agent-2');
    // each agent's record is written on its own: both must be in the store before A dies
    await waitForAsync(async () => (await b.locate('agent-1'))?.id === a.id && (await b.locate('agent-2'))?.id === a.id, 'the agents on A');

    // A's clock falls a minute behind: every expiry it renews its row with has already passed for
    // the others, as if it had stopped renewing. (Moving the others' clock on instead would make B
    // and C look dead to each other too, until each renewed once with the new time.)
    stalled.now -= 60_000;
    await waitForAsync(async () => lost.length > 0, 'a survivor to find A dead');
    // A's next heartbeat finds its row gone and registers again (still with its old clock, so the
    // others may find it dead again meanwhile): each time, one survivor reports its agents
    stalled.now = others.now;
    expect(lost[0].keys.sort()).toEqual(['agent-1', 'agent-2']);
    await waitForAsync(async () => (await b.locate('agent-1', { fresh: true }))?.id === a.id, 'A to record its agents again');
    expect(await b.verifyPeer(a.id, a.secret)).toEqual({ id: a.id, url: 'http://a' });
    const reports = lost.length;
    await new Promise((resolve) => setTimeout(resolve, 10 * HEARTBEAT_MS));
    expect(lost).toHaveLength(reports);
  });

  it('hands its agents over at a graceful stop without waiting for its heartbeats to run out', async () => {
    const db = await store();
    const clock = { now: Date.parse('2026-12-06T12:00:00Z') };
    const a = replica(db, 'http://a', clock);
    const b = replica(db, 'http://b', clock);
    const lost: string[][] = [];
    b.onReplicaLost((keys) => lost.push(keys));
    await a.start();
    await b.start();
    a.holdAgent('agent-1');
    await waitForAsync(async () => (await b.locate('agent-1'))?.id === a.id, 'the agent on A');
    await a.stop();
    await waitForAsync(async () => lost.length === 1, 'B to take A\'s agents over');
    expect(lost[0]).toEqual(['agent-1']);
  });
});

async function waitForAsync(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + CONDITION_TIMEOUT_MS;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`Timed out after ${CONDITION_TIMEOUT_MS} ms waiting for ${what}.`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
