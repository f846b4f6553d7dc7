import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { corkForThisTick, setTransport } from './tick-cork.ts';

/** A Writable that records each call of its sink: one entry per write or writev, with the chunks it carried. */
function recorder() {
  const calls: string[][] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      calls.push([chunk.toString()]);
      callback();
    },
    writev(chunks, callback) {
      calls.push(chunks.map(({ chunk }) => (chunk as Buffer).toString()));
      callback();
    },
  });
  return { stream, calls };
}

describe('corkForThisTick', () => {
  it("sends the writes of one tick on a websocket's socket in a single writev, corked once however often it is asked", async () => {
    const { stream, calls } = recorder();
    const websocket = {};
    setTransport(websocket, stream);
    corkForThisTick(websocket);
    stream.write('open');
    corkForThisTick(websocket);
    stream.write('data');
    stream.write('eof');
    expect(stream.writableCorked).toBe(1);
    expect(calls).toEqual([]);
    await new Promise((resolve) => process.nextTick(resolve));
    expect(calls).toEqual([['open', 'data', 'eof']]);
    expect(stream.writableCorked).toBe(0);

    // the next tick corks again
    corkForThisTick(websocket);
    stream.write('window');
    stream.write('close');
    await new Promise((resolve) => setImmediate(resolve));
    expect(calls).toEqual([['open', 'data', 'eof'], ['window', 'close']]);
  });

  it('leaves a websocket whose socket was never set alone', () => {
    expect(() => corkForThisTick({})).not.toThrow();
  });
});
