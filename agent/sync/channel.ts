import { DEFAULT_CHANNEL_WINDOW } from '../../protocol/agent.ts';
import { ChannelSender, ReceiveWindow } from '../../protocol/agent-flow.ts';
import type { ChannelContext, ChannelHandler } from '../exec.ts';

export interface SyncChannelHooks {
  /** bytes from the server (the op stream, or command lines); throws to end the channel */
  consume(payload: Uint8Array): void;
  /** the code a consume failure ends the channel with, and its sentence */
  failure(error: unknown): { code: string; message: string };
  /** says why the channel ends, as a status line, before the close */
  reportError(error: { code: string; message: string }): void;
  /** stops what runs behind the channel (watchers, open files) */
  cleanup(): void;
}

export interface SyncChannel {
  sender: ChannelSender;
  readonly finished: boolean;
  /** Ends the channel (with the reason, when it failed) once what is queued has gone out. */
  finish(error?: { code: string; message: string }): void;
  handler: ChannelHandler;
}

/**
 * The channel plumbing both sync kinds share: credit both ways (our receive window, granted back
 * as soon as a payload is consumed, since both consume synchronously), and an end that lets the
 * last status line reach the server before the close.
 */
export function createSyncChannel(channel: number, peerWindow: number, context: ChannelContext, onClosed: () => void, hooks: SyncChannelHooks, window = DEFAULT_CHANNEL_WINDOW): SyncChannel {
  const sender = new ChannelSender(channel, peerWindow, (frame) => context.send(frame));
  const receive = new ReceiveWindow(window);
  let finished = false;
  const finish = (error?: { code: string; message: string }) => {
    if (finished) return;
    finished = true;
    hooks.cleanup();
    if (error) hooks.reportError(error);
    const close = () => {
      context.send({ type: 'close', channel, ...(error ? { error } : {}) });
      sender.close();
      onClosed();
    };
    if (sender.queuedBytes === 0) close();
    else sender.onDrain = close;
  };
  context.send({ type: 'open_ok', channel, window });
  const handler: ChannelHandler = {
    onData(payload) {
      if (finished) return;
      if (!receive.receive(payload.byteLength)) return finish({ code: 'FLOW_CONTROL_VIOLATION', message: 'The server sent more data than the window allowed.' });
      try {
        hooks.consume(payload);
      } catch (error) {
        return finish(hooks.failure(error));
      }
      const grant = receive.consume(payload.byteLength, true);
      if (grant > 0 && !finished) context.send({ type: 'window', channel, bytes: grant });
    },
    onEof() {
      finish();
    },
    onWindow(bytes) {
      sender.grant(bytes);
    },
    onSignal() {},
    onResize() {},
    abort() {
      // the server closed the channel (it already knows): end without another frame
      finished = true;
      hooks.cleanup();
      sender.close();
      onClosed();
    },
  };
  return { sender, handler, finish, get finished() { return finished; } };
}

/** The handler of a channel refused at open (open_error already sent). */
export function refusedChannel(onClosed: () => void): ChannelHandler {
  onClosed();
  return { onData() {}, onEof() {}, onWindow() {}, onSignal() {}, onResize() {}, abort() {} };
}
