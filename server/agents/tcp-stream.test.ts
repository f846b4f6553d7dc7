import { describe, expect, it } from 'vitest';
import { DEFAULT_CHANNEL_WINDOW, MAX_BULK_DATA_PAYLOAD, type ChannelSpec } from '../../protocol/agent.ts';
import type { AgentHub } from './hub-types.ts';
import { openTcpStream, WindowBudget } from './tcp-stream.ts';

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

describe('openTcpStream', () => {
  it('declares bulk frames (1.8) with the large window of a budgeted channel (the app proxy), neither past the budget nor on others', async () => {
    const opened: { spec: ChannelSpec; window: number }[] = [];
    // the hub is den's own seam: this records the open the agent would get, and accepts it
    const hub = {
      openChannel: async (_agent: unknown, spec: ChannelSpec, window: number, attach: (channel: number, peerWindow: number, link: { send(): void; release(): void }) => unknown) => {
        opened.push({ spec, window });
        attach(opened.length * 2 - 1, DEFAULT_CHANNEL_WINDOW, { send() {}, release() {} });
        return opened.length * 2 - 1;
      },
    } as unknown as AgentHub;
    const budget = new WindowBudget(2 * MIB, 3 * MIB);
    await openTcpStream(hub, 'ws-1', { port: 3000 }, budget);
    // the budget is spent: the next app channel opens as a classic one
    await openTcpStream(hub, 'ws-1', { port: 3000 }, budget);
    await openTcpStream(hub, 'ws-1', { port: 22 });
    expect(opened).toEqual([
      { spec: { kind: 'tcp', host: '127.0.0.1', port: 3000, maxData: MAX_BULK_DATA_PAYLOAD }, window: 2 * MIB },
      { spec: { kind: 'tcp', host: '127.0.0.1', port: 3000 }, window: DEFAULT_CHANNEL_WINDOW },
      { spec: { kind: 'tcp', host: '127.0.0.1', port: 22 }, window: DEFAULT_CHANNEL_WINDOW },
    ]);
  });
});
