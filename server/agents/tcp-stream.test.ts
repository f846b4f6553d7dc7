import { describe, expect, it } from 'vitest';
import { DEFAULT_CHANNEL_WINDOW } from '../../protocol/agent.ts';
import { WindowBudget } from './tcp-stream.ts';

const MIB = 1024 * 1024;

describe('WindowBudget', () => {
  it('grants the large window while the cap has room, then the default window, and takes released room back', () => {
    const budget = new WindowBudget(2 * MIB, 5 * MIB);
    const first = budget.take();
    const second = budget.take();
    const third = budget.take();
    expect([first.window, second.window, third.window]).toEqual([2 * MIB, 2 * MIB, DEFAULT_CHANNEL_WINDOW]);
    expect(budget.heldBytes).toBe(4 * MIB);
    third.release(); // a default-window channel holds nothing of the budget
    expect(budget.heldBytes).toBe(4 * MIB);
    first.release();
    first.release(); // a second release of the same channel must not free room twice
    expect(budget.heldBytes).toBe(2 * MIB);
    expect(budget.take().window).toBe(2 * MIB);
    expect(budget.take().window).toBe(DEFAULT_CHANNEL_WINDOW);
  });

  it('never declares less than the default window', () => {
    const budget = new WindowBudget(64 * 1024, 10 * MIB);
    expect(budget.take().window).toBe(DEFAULT_CHANNEL_WINDOW);
    expect(budget.heldBytes).toBe(0);
  });
});
