import { describe, expect, it } from 'vitest';
import { CHANNEL_HEADER_BYTES, decodeFrame, encodeFrame, MAX_DATA_PAYLOAD, type DataFrame } from './agent.ts';
import { ChannelSender, ReceiveWindow } from './agent-flow.ts';

describe('ChannelSender', () => {
  it('never sends more than the granted credit and sends the rest after a grant', () => {
    const sent: DataFrame[] = [];
    const sender = new ChannelSender(1, 10, (frame) => sent.push(frame));
    let done = false;
    expect(sender.write('data', new Uint8Array(25), () => (done = true))).toBe(false);
    expect(sent.map((f) => f.payload.byteLength)).toEqual([10]);
    expect(sender.queuedBytes).toBe(15);
    expect(done).toBe(false);

    let drained = 0;
    sender.onDrain = () => drained++;
    sender.grant(5);
    expect(sent.map((f) => f.payload.byteLength)).toEqual([10, 5]);
    sender.grant(100);
    expect(sent.map((f) => f.payload.byteLength)).toEqual([10, 5, 10]);
    expect(done).toBe(true);
    expect(drained).toBe(1);
    expect(sender.availableCredit).toBe(90);
  });

  it('splits writes into frames of at most MAX_DATA_PAYLOAD bytes and keeps stream order', () => {
    const sent: DataFrame[] = [];
    const sender = new ChannelSender(3, 10 * MAX_DATA_PAYLOAD, (frame) => sent.push(frame));
    expect(sender.write('data', new Uint8Array(2 * MAX_DATA_PAYLOAD + 1))).toBe(true);
    expect(sender.write('stderr', new Uint8Array([1]))).toBe(true);
    expect(sent.map((f) => [f.type, f.payload.byteLength])).toEqual([
      ['data', MAX_DATA_PAYLOAD],
      ['data', MAX_DATA_PAYLOAD],
      ['data', 1],
      ['stderr', 1],
    ]);
  });

  it('splits into frames of the maxPayload the receiver declared (1.8), still within its credit', () => {
    const sent: DataFrame[] = [];
    const sender = new ChannelSender(5, 5 * MAX_DATA_PAYLOAD, (frame) => sent.push(frame), 2 * MAX_DATA_PAYLOAD);
    expect(sender.write('data', new Uint8Array(6 * MAX_DATA_PAYLOAD))).toBe(false);
    expect(sent.map((f) => f.payload.byteLength)).toEqual([2 * MAX_DATA_PAYLOAD, 2 * MAX_DATA_PAYLOAD, MAX_DATA_PAYLOAD]);
    sender.grant(MAX_DATA_PAYLOAD);
    expect(sent.map((f) => f.payload.byteLength).slice(3)).toEqual([MAX_DATA_PAYLOAD]);
  });

  it('encodes a write with header room around it without a copy, and only its first frame when it is split', () => {
    const frames: Uint8Array[] = [];
    const sender = new ChannelSender(7, 3, (frame) => frames.push(encodeFrame(frame) as Uint8Array));
    const buffer = new Uint8Array(CHANNEL_HEADER_BYTES + 6);
    const payload = buffer.subarray(CHANNEL_HEADER_BYTES);
    payload.set([1, 2, 3, 4, 5, 6]);
    sender.write('data', payload, undefined, true);
    sender.grant(3);
    // the first frame is the caller's buffer, its header written in the room before the payload
    expect(frames[0].buffer).toBe(buffer.buffer);
    expect(decodeFrame(frames[0])).toEqual({ type: 'data', channel: 7, payload: new Uint8Array([1, 2, 3]) });
    // the rest is copied: the room before it is the first part, which the socket may still hold
    expect(frames[1].buffer).not.toBe(buffer.buffer);
    expect(decodeFrame(frames[1])).toEqual({ type: 'data', channel: 7, payload: new Uint8Array([4, 5, 6]) });
    expect([...payload.subarray(0, 3)]).toEqual([1, 2, 3]);
    // without room (a payload at the start of its buffer) the frame is copied as before
    const plain = encodeFrame({ type: 'data', channel: 7, payload: new Uint8Array([9]), headroom: true }) as Uint8Array;
    expect(decodeFrame(plain)).toEqual({ type: 'data', channel: 7, payload: new Uint8Array([9]) });
  });

  it('calls pending write callbacks when the channel closes, so writers do not hang', () => {
    const sender = new ChannelSender(1, 0, () => {});
    let done = false;
    sender.write('data', new Uint8Array(5), () => (done = true));
    sender.close();
    expect(done).toBe(true);
    expect(sender.queuedBytes).toBe(0);
  });
});

describe('ReceiveWindow', () => {
  it('refuses bytes beyond the window until they are granted back', () => {
    const window = new ReceiveWindow(100);
    expect(window.receive(100)).toBe(true);
    expect(window.receive(1)).toBe(false);
    expect(window.consume(10)).toBe(0); // below a quarter of the window: batched
    expect(window.consume(15)).toBe(25);
    expect(window.receive(25)).toBe(true);
    expect(window.receive(1)).toBe(false);
  });

  it('grants whatever is pending when flushed', () => {
    const window = new ReceiveWindow(100);
    window.receive(3);
    expect(window.consume(3, true)).toBe(3);
    expect(window.consume(0, true)).toBe(0);
  });

  it('lets a sender and a receiver move any amount through a small window', () => {
    const receiver = new ReceiveWindow(64);
    let delivered = 0;
    let violations = 0;
    const sender: ChannelSender = new ChannelSender(1, 64, (frame) => {
      if (!receiver.receive(frame.payload.byteLength)) violations++;
      delivered += frame.payload.byteLength;
      // the consumer drains each frame at once; grants flow back
      queueMicrotask(() => {
        const grant = receiver.consume(frame.payload.byteLength);
        if (grant > 0) sender.grant(grant);
      });
    });
    return new Promise<void>((resolve) => {
      sender.write('data', new Uint8Array(10_000), () => {
        expect(delivered).toBe(10_000);
        expect(violations).toBe(0);
        resolve();
      });
    });
  });
});
