import { describe, expect, it } from 'vitest';
import { createPasswordGate } from './password-gate.ts';

/** A check that runs until the test ends it. */
function heldCheck() {
  let end!: () => void;
  let started = false;
  const done = new Promise<void>((resolve) => { end = resolve; });
  return { check: async () => { started = true; await done; }, end, get started() { return started; } };
}

describe('password gate', () => {
  it('runs priority 0 in its reserved place beside a full gate, and starts nothing else until it ends', async () => {
    const gate = createPasswordGate({ concurrency: 1, reserved: 1, queueLimit: 4 });
    const spray = heldCheck();
    const sprayRun = gate.run(3, spray.check);
    const known = heldCheck();
    const knownRun = gate.run(0, known.check);
    expect({ spray: spray.started, known: known.started, running: gate.running }).toEqual({ spray: true, known: true, running: 2 });

    const next = heldCheck();
    const nextRun = gate.run(1, next.check);
    spray.end();
    await sprayRun;
    // the general place is free, but the reserved check still runs
    expect({ next: next.started, waiting: gate.waiting }).toEqual({ next: false, waiting: 1 });
    known.end();
    await knownRun;
    expect(next.started).toBe(true);
    next.end();
    await nextRun;
    expect(gate.peak).toBe(2);
  });

  it('refuses the worst waiter when a better one arrives at a full queue, and the newcomer when none is worse', async () => {
    const gate = createPasswordGate({ concurrency: 1, reserved: 0, queueLimit: 2 });
    const running = heldCheck();
    const runningRun = gate.run(1, running.check);
    const order: string[] = [];
    const queued = (name: string, priority: number) => gate.run(priority, async () => { order.push(name); }).then(() => 'ran', (error) => error.code as string);
    const a = queued('a', 2);
    const b = queued('b', 5);
    expect(await queued('c', 5)).toBe('RATE_LIMITED');
    const d = queued('d', 1);
    expect(await b).toBe('RATE_LIMITED');
    running.end();
    await runningRun;
    expect([await a, await d]).toEqual(['ran', 'ran']);
    expect(order).toEqual(['d', 'a']);
  });
});
