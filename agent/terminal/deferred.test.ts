import { describe, expect, it } from 'vitest';
import type { ChannelContext, ChannelHandler } from '../exec.ts';
import { deferredOpener } from './deferred.ts';

const context: ChannelContext = { send() {}, baseEnv: () => ({}), home: () => '/' };
const spec = { kind: 'terminal' as const, cols: 80, rows: 24 };

/** An opener that records what reaches the handlers it makes. */
function recordingOpener(calls: string[]) {
  return (channel: number): ChannelHandler => {
    calls.push(`open ${channel}`);
    return {
      onData: (payload) => calls.push(`data ${payload.byteLength}`),
      onEof: () => calls.push('eof'),
      onWindow: (bytes) => calls.push(`window ${bytes}`),
      onSignal: (signal) => calls.push(`signal ${signal}`),
      onResize: (cols, rows) => calls.push(`resize ${cols}x${rows}`),
      abort: () => calls.push('abort'),
    };
  };
}

describe('deferredOpener', () => {
  it('queues the frames of a channel opened while the opener loads and replays them in order', async () => {
    const calls: string[] = [];
    let load!: (opener: ReturnType<typeof recordingOpener>) => void;
    const opener = deferredOpener(new Promise<ReturnType<typeof recordingOpener>>((resolve) => (load = resolve)));
    const handler = opener(1, spec, 1024, context, () => {});
    handler.onData(new Uint8Array(3));
    handler.onWindow(10);
    handler.onResize(100, 30);
    expect(calls).toEqual([]);
    load(recordingOpener(calls));
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(calls).toEqual(['open 1', 'data 3', 'window 10', 'resize 100x30']);
    handler.onData(new Uint8Array(5));
    expect(calls.at(-1)).toBe('data 5');
    // once loaded, new channels go straight to the real opener
    opener(3, spec, 1024, context, () => {}).onEof();
    expect(calls.slice(-2)).toEqual(['open 3', 'eof']);
  });

  it('never opens a channel that was aborted before the opener loaded', async () => {
    const calls: string[] = [];
    let load!: (opener: ReturnType<typeof recordingOpener>) => void;
    const handler = deferredOpener(new Promise<ReturnType<typeof recordingOpener>>((resolve) => (load = resolve)))(1, spec, 1024, context, () => {});
    handler.onData(new Uint8Array(1));
    handler.abort();
    load(recordingOpener(calls));
    await new Promise((resolve) => setTimeout(resolve, 0));
    expect(calls).toEqual([]);
  });
});
