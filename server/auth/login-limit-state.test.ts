import { describe, expect, it } from 'vitest';
import { createInMemoryLoginLimitState } from './login-limit-state.ts';
import { createLoginLimits } from './login-limits.ts';
import { createPasswordGate } from './password-gate.ts';

// Time is a number the test moves by hand: the state and the limits read it only through `now`.

describe('in-memory login limit state', () => {
  it('counts in a window that opens at the first add and starts from zero after it, never below zero', async () => {
    const state = createInMemoryLoginLimitState();
    expect(await state.add('a', 0, 1_000, 0)).toEqual({ count: 0, resetsAt: 1_000 });
    expect(await state.add('a', 1, 1_000, 100)).toEqual({ count: 1, resetsAt: 1_100 });
    expect(await state.add('a', 1, 1_000, 900)).toEqual({ count: 2, resetsAt: 1_100 });
    expect(await state.add('a', -5, 1_000, 950)).toEqual({ count: 0, resetsAt: 1_100 });
    expect(await state.add('a', 1, 1_000, 1_000)).toEqual({ count: 1, resetsAt: 1_100 });
    expect(await state.add('a', 1, 1_000, 1_100)).toEqual({ count: 1, resetsAt: 2_100 });
  });

  it('spaces reservations and refuses one that would wait longer than allowed, saying how long until one could be had', async () => {
    const state = createInMemoryLoginLimitState();
    expect(await state.reserveSlot('p', 500, 1_000, 0)).toEqual({ reserved: true, waitMs: 0 });
    expect(await state.reserveSlot('p', 500, 1_000, 0)).toEqual({ reserved: true, waitMs: 500 });
    expect(await state.reserveSlot('p', 500, 1_000, 0)).toEqual({ reserved: true, waitMs: 1_000 });
    expect(await state.reserveSlot('p', 500, 1_000, 100)).toEqual({ reserved: false, waitMs: 400 });
    expect(await state.reserveSlot('p', 500, 1_000, 500)).toEqual({ reserved: true, waitMs: 1_000 });
    // no spacing: nothing to remember
    expect(await state.reserveSlot('q', 0, 0, 0)).toEqual({ reserved: true, waitMs: 0 });
    expect(await state.reserveSlot('q', 0, 0, 0)).toEqual({ reserved: true, waitMs: 0 });
  });

  it('holds at most maxKeys keys, dropping expired ones first and then the least recently changed', async () => {
    const state = createInMemoryLoginLimitState(10);
    await state.add('expired', 1, 10, 0);
    for (let i = 0; i < 9; i++) await state.add(`k${i}`, 1, 1_000, 0);
    await state.add('k0', 1, 1_000, 50);
    // full: the sweep drops 'expired' and nothing else
    await state.add('k9', 1, 1_000, 50);
    expect((await state.add('k1', 0, 1_000, 60)).count).toBe(1);
    // full again, nothing expired: the least recently changed go (k1) and k0, changed later, stays
    await state.add('k10', 1, 1_000, 60);
    expect((await state.add('k1', 0, 1_000, 60)).count).toBe(0);
    expect((await state.add('k2', 0, 1_000, 60)).count).toBe(1);
    expect((await state.add('k0', 0, 1_000, 60)).count).toBe(2);
  });
});

describe('login limits with a hand-moved clock', () => {
  const limitsAt = (clock: { now: number }) =>
    createLoginLimits({ now: () => clock.now, addressFailuresPerMinute: 100, freeFailures: 1, firstDelayMs: 10, maxDelayMs: 20, accountWindowMs: 60_000, gate: createPasswordGate({ concurrency: 1 }) });
  const wrong = async () => undefined;

  it('paces an account after its free failures and stops when its failure window ends', async () => {
    const clock = { now: 0 };
    const limits = limitsAt(clock);
    await limits.attempt({ address: '203.0.113.1', username: 'dana' }, wrong);
    await limits.attempt({ address: '203.0.113.2', username: 'dana' }, wrong);
    // the clock stands still: the third attempt waits for its slot, and a fourth would wait
    // longer than the longest delay
    const third = limits.attempt({ address: '203.0.113.3', username: 'dana' }, wrong);
    await expect(limits.attempt({ address: '203.0.113.4', username: 'dana' }, wrong)).rejects.toMatchObject({ code: 'RATE_LIMITED', retryAfterSeconds: 1 });
    await expect(third).resolves.toBeUndefined();

    clock.now += 60_000;
    for (let i = 0; i < 2; i++) {
      await expect(limits.attempt({ address: `203.0.113.${10 + i}`, username: 'dana' }, wrong)).resolves.toBeUndefined();
    }
  });

  it('refuses an address past its failures for the rest of the minute, and counts a success as no failure', async () => {
    const clock = { now: 0 };
    const limits = createLoginLimits({ now: () => clock.now, addressFailuresPerMinute: 2 });
    const from = (username: string) => ({ address: '2001:db8::1', username });
    await expect(limits.attempt(from('erin'), async () => 'erin')).resolves.toBe('erin');
    await limits.attempt(from('x'), wrong);
    clock.now += 15_000;
    await limits.attempt(from('y'), wrong);
    // another address of the same /64 shares the count
    await expect(limits.attempt({ address: '2001:db8::2', username: 'z' }, wrong)).rejects.toMatchObject({ code: 'RATE_LIMITED', retryAfterSeconds: 45 });
    clock.now += 45_000;
    await expect(limits.attempt(from('erin'), async () => 'erin')).resolves.toBe('erin');
  });

  it('keeps the lane of a known address apart from a username that spells its key', async () => {
    const clock = { now: 0 };
    const limits = limitsAt(clock);
    const home = { address: '203.0.113.1', username: 'dana' };
    await expect(limits.attempt(home, async () => 'dana')).resolves.toBe('dana');
    for (const spelled of ['dana|203.0.113.1', 'dana","203.0.113.1']) {
      for (let i = 0; i < 3; i++) await limits.attempt({ address: `203.0.113.${20 + i}`, username: spelled }, wrong);
    }
    // the clock stands still: any pacing of dana's lane would refuse the third of these
    const signIns = await Promise.all([1, 2, 3].map(() => limits.attempt(home, async () => 'dana')));
    expect(signIns).toEqual(['dana', 'dana', 'dana']);
  });
});
