import type { ChannelSpec } from '../../protocol/agent.ts';
import type { ChannelContext, ChannelHandler } from '../exec.ts';

type Opener<S> = (channel: number, spec: S, peerWindow: number, context: ChannelContext, onClosed: () => void) => ChannelHandler;

/**
 * An opener whose implementation is still loading. The terminal code (node-pty, the headless
 * xterm.js: ~40-60 ms to evaluate) loads after the agent has said hello, so it does not delay
 * start-up; a channel opened before it is there waits, its frames queued and replayed in order.
 */
export function deferredOpener<S extends ChannelSpec>(loading: Promise<Opener<S>>): Opener<S> {
  let loaded: Opener<S> | undefined;
  void loading.then((opener) => (loaded = opener));
  return (channel, spec, peerWindow, context, onClosed) => {
    if (loaded) return loaded(channel, spec, peerWindow, context, onClosed);
    const queued: Array<(handler: ChannelHandler) => void> = [];
    let real: ChannelHandler | undefined;
    let aborted = false;
    void loading.then((opener) => {
      if (aborted) return; // the link forgot the channel already
      real = opener(channel, spec, peerWindow, context, onClosed);
      for (const call of queued.splice(0)) call(real);
    });
    const later = (call: (handler: ChannelHandler) => void) => (real ? call(real) : queued.push(call));
    return {
      onData: (payload) => later((handler) => handler.onData(payload)),
      onEof: () => later((handler) => handler.onEof()),
      onWindow: (bytes) => later((handler) => handler.onWindow(bytes)),
      onSignal: (signal) => later((handler) => handler.onSignal(signal)),
      onResize: (cols, rows) => later((handler) => handler.onResize(cols, rows)),
      abort: () => {
        if (real) return real.abort();
        aborted = true;
      },
    };
  };
}
