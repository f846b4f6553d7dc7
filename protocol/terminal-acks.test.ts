import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { ACK_EVERY_BYTES } from './terminal.ts';
import { ACK_QUIET_DELAY_MS, OutputAcks } from './terminal-acks.ts';

describe('OutputAcks', () => {
  let sent: number[];
  let acks: OutputAcks;
  beforeEach(() => {
    vi.useFakeTimers();
    sent = [];
    acks = new OutputAcks((bytes) => sent.push(bytes));
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  test('acknowledges a flood in steps of ACK_EVERY_BYTES as it is consumed, without waiting', () => {
    const chunk = ACK_EVERY_BYTES / 4;
    for (let i = 0; i < 12; i++) acks.received(chunk);
    for (let i = 0; i < 12; i++) acks.consumed(chunk);
    expect(sent).toEqual([ACK_EVERY_BYTES, ACK_EVERY_BYTES, ACK_EVERY_BYTES]);
  });

  test('holds a small remainder until output has been quiet for a while, then acknowledges it with what followed', () => {
    acks.received(1);
    acks.consumed(1); // an echoed keystroke
    vi.advanceTimersByTime(ACK_QUIET_DELAY_MS - 1);
    acks.received(30);
    acks.consumed(30); // its line's output, within the delay
    expect(sent).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(sent).toEqual([31]);
    vi.advanceTimersByTime(10 * ACK_QUIET_DELAY_MS);
    expect(sent).toEqual([31]);
  });

  test('does not start the quiet delay while received output is still being parsed', () => {
    acks.received(100);
    acks.received(100);
    acks.consumed(100);
    vi.advanceTimersByTime(10 * ACK_QUIET_DELAY_MS);
    expect(sent).toEqual([]);
    acks.consumed(100);
    vi.advanceTimersByTime(ACK_QUIET_DELAY_MS);
    expect(sent).toEqual([200]);
  });

  test('a full step sends at once and cancels the pending quiet acknowledgement', () => {
    acks.received(10);
    acks.consumed(10);
    acks.received(ACK_EVERY_BYTES);
    acks.consumed(ACK_EVERY_BYTES);
    expect(sent).toEqual([ACK_EVERY_BYTES + 10]);
    vi.advanceTimersByTime(ACK_QUIET_DELAY_MS);
    expect(sent).toEqual([ACK_EVERY_BYTES + 10]);
  });

  test('a reattach voids what the previous attachment left; a stopped connection sends nothing', () => {
    acks.received(50);
    acks.consumed(50);
    acks.reset();
    vi.advanceTimersByTime(ACK_QUIET_DELAY_MS);
    expect(sent).toEqual([]);
    acks.received(5);
    acks.consumed(5);
    acks.stop();
    vi.advanceTimersByTime(ACK_QUIET_DELAY_MS);
    acks.consumed(ACK_EVERY_BYTES);
    expect(sent).toEqual([]);
  });
});
