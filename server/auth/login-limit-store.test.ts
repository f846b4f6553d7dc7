import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, postgresSkipReason } from '../../test/support/postgres.ts';
import { openStore, type Store } from '../store/connect.ts';
import { createStoreLoginLimitState } from './login-limit-store.ts';
import { createLoginLimits } from './login-limits.ts';
import { createPasswordGate } from './password-gate.ts';

// The same expectations as the in-memory state (login-limit-state.test.ts), against PostgreSQL,
// and two limit instances (two replicas) over one database sharing what they count.

if (postgresSkipReason) console.warn(`[skip] the login limit state in PostgreSQL: ${postgresSkipReason}`);

describe.skipIf(postgresSkipReason !== undefined)('login limit state in PostgreSQL', () => {
  let store: Store;
  let drop: () => Promise<void>;
  beforeAll(async () => {
    const database = await createTestDatabase();
    drop = database.drop;
    store = await openStore({ databaseUrl: database.url });
  });
  afterAll(async () => {
    await store?.close();
    await drop?.();
  });

  it('counts in a window that opens at the first add and starts from zero after it, never below zero', async () => {
    const state = createStoreLoginLimitState(store.db, 'count-test');
    expect(await state.add('a', 0, 1_000, 0)).toEqual({ count: 0, resetsAt: 1_000 });
    expect(await state.add('a', 1, 1_000, 100)).toEqual({ count: 1, resetsAt: 1_100 });
    expect(await state.add('a', 1, 1_000, 900)).toEqual({ count: 2, resetsAt: 1_100 });
    expect(await state.add('a', -5, 1_000, 950)).toEqual({ count: 0, resetsAt: 1_100 });
    expect(await state.add('a', 1, 1_000, 1_000)).toEqual({ count: 1, resetsAt: 1_100 });
    expect(await state.add('a', 1, 1_000, 1_100)).toEqual({ count: 1, resetsAt: 2_100 });
    // another namespace does not see it
    expect(await createStoreLoginLimitState(store.db, 'other').add('a', 0, 1_000, 1_200)).toEqual({ count: 0, resetsAt: 2_200 });
  });

  it('spaces reservations and refuses one that would wait longer than allowed, saying how long until one could be had', async () => {
    const state = createStoreLoginLimitState(store.db, 'slot-test');
    expect(await state.reserveSlot('p', 500, 1_000, 0)).toEqual({ reserved: true, waitMs: 0 });
    expect(await state.reserveSlot('p', 500, 1_000, 0)).toEqual({ reserved: true, waitMs: 500 });
    expect(await state.reserveSlot('p', 500, 1_000, 0)).toEqual({ reserved: true, waitMs: 1_000 });
    expect(await state.reserveSlot('p', 500, 1_000, 100)).toEqual({ reserved: false, waitMs: 400 });
    expect(await state.reserveSlot('p', 500, 1_000, 500)).toEqual({ reserved: true, waitMs: 1_000 });
    expect(await state.reserveSlot('q', 0, 0, 0)).toEqual({ reserved: true, waitMs: 0 });
    expect(await state.reserveSlot('q', 0, 0, 0)).toEqual({ reserved: true, waitMs: 0 });
  });

  it('counts concurrent adds from many callers exactly', async () => {
    const state = createStoreLoginLimitState(store.db, 'race-test');
    await Promise.all(Array.from({ length: 50 }, () => state.add('k', 1, 60_000, 0)));
    expect((await state.add('k', 0, 60_000, 0)).count).toBe(50);
  });

  it('refuses an address on replica B after its failures on replica A', async () => {
    const clock = { now: 0 };
    const replica = () => createLoginLimits({
      now: () => clock.now,
      addressFailuresPerMinute: 2,
      state: createStoreLoginLimitState(store.db, 'limits'),
      knownAddresses: createStoreLoginLimitState(store.db, 'known'),
      gate: createPasswordGate({ concurrency: 1 }),
    });
    const [a, b] = [replica(), replica()];
    const wrong = async () => undefined;
    await a.attempt({ address: '203.0.113.7', username: 'x' }, wrong);
    await a.attempt({ address: '203.0.113.7', username: 'y' }, wrong);
    await expect(b.attempt({ address: '203.0.113.7', username: 'z' }, wrong)).rejects.toMatchObject({ code: 'RATE_LIMITED', retryAfterSeconds: 60 });
    // a right password on A makes the address known to the account on B too
    await expect(a.attempt({ address: '198.51.100.1', username: 'erin' }, async () => 'erin')).resolves.toBe('erin');
    const known = await createStoreLoginLimitState(store.db, 'known').add(JSON.stringify(['erin', '198.51.100.1']), 0, 60_000, 0);
    expect(known.count).toBe(1);
  });
});
