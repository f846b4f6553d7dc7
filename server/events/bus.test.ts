import { describe, expect, it } from 'vitest';
import type { WorkspaceEvent } from '../../protocol/events.ts';
import { createLocalEventBus } from './bus.ts';

const event = (status: string): WorkspaceEvent => ({ type: 'workspace.status', workspaceId: 'w1', at: '2026-12-06T00:00:00.000Z', status });

describe('the in-process event bus', () => {
  it('gives every event the next id and delivers it to every subscriber in order', () => {
    const bus = createLocalEventBus(() => {});
    const seen: Array<[string, number, string]> = [];
    bus.subscribe((id, e) => seen.push(['a', id, e.type === 'workspace.status' ? e.status : '']));
    bus.subscribe((id, e) => seen.push(['b', id, e.type === 'workspace.status' ? e.status : '']));
    bus.publish(event('starting'));
    bus.publish(event('running'));
    expect(seen).toEqual([['a', 1, 'starting'], ['b', 1, 'starting'], ['a', 2, 'running'], ['b', 2, 'running']]);
  });

  it('keeps delivering to the others when a subscriber throws, and reports the error', () => {
    const errors: unknown[] = [];
    const bus = createLocalEventBus((error) => errors.push(error));
    const seen: number[] = [];
    bus.subscribe(() => {
      throw new Error('broken subscriber');
    });
    bus.subscribe((id) => seen.push(id));
    expect(() => bus.publish(event('running'))).not.toThrow();
    expect(seen).toEqual([1]);
    expect(errors).toHaveLength(1);
  });

  it('stops delivering after unsubscribe and counts its subscribers', () => {
    const bus = createLocalEventBus(() => {});
    const seen: number[] = [];
    const unsubscribe = bus.subscribe((id) => seen.push(id));
    expect(bus.subscribers).toBe(1);
    unsubscribe();
    bus.publish(event('running'));
    expect(seen).toEqual([]);
    expect(bus.subscribers).toBe(0);
  });
});
