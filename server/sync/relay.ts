import { ChannelSender, ReceiveWindow } from '../../protocol/agent-flow.ts';
import type { ChannelSpec } from '../../protocol/agent.ts';
import { LineSplitter, MAX_SYNC_LINE_BYTES } from '../../protocol/sync.ts';
import type { AgentHub, AgentRef, ChannelEndpoint, ChannelLink } from '../agents/hub-types.ts';

/** The server's receive window for the op stream: what it may hold per running sync while the service's agent catches up. */
const STREAM_WINDOW = 2 * 1024 * 1024;

export interface SyncPipeHooks {
  /** bytes of the source's status lines (its STDERR) */
  sourceStatus(bytes: Uint8Array): void;
  /** bytes of the target's status lines (its DATA) */
  targetStatus(bytes: Uint8Array): void;
  /** a side closed its channel or its agent went away (after every status byte it sent was delivered) */
  ended(side: 'source' | 'target'): void;
}

export interface SyncPipe {
  /** a command line for the source (its stdin) */
  command(line: string): void;
  /** closes both channels */
  close(): void;
}

interface Side {
  channel: number;
  link: ChannelLink;
  sender: ChannelSender;
  window: ReceiveWindow;
  closed: boolean;
}

/**
 * The `sync-source` channel's DATA relayed frame by frame into the `sync-target` channel, without
 * streams and without parsing the op stream (the service's agent validates it): each payload goes
 * out as it came in, and its bytes are granted back to the source once they left for the target,
 * so the server holds at most one window per sync and both agents keep their flow control end to
 * end. Replaced a Node stream pipe through two exec sessions (ADR 0028: part of the server's CPU
 * per copied byte).
 */
export async function openSyncPipe(
  agents: AgentHub, source: { agent: AgentRef; spec: ChannelSpec }, target: { agent: AgentRef; spec: ChannelSpec }, hooks: SyncPipeHooks,
): Promise<SyncPipe> {
  let sourceSide: Side | undefined;
  let targetSide: Side | undefined;
  let sourceEnded = false;
  const close = (side: Side | undefined) => {
    if (!side || side.closed) return;
    side.closed = true;
    side.link.send({ type: 'close', channel: side.channel });
    side.sender.close();
    side.link.release();
  };
  const ended = (which: 'source' | 'target') => {
    const side = which === 'source' ? sourceSide : targetSide;
    if (side && !side.closed) {
      side.closed = true;
      side.sender.close();
      side.link.release();
    }
    hooks.ended(which);
  };
  const grant = (side: Side, bytes: number, flush: boolean) => {
    const more = side.window.consume(bytes, flush);
    if (more > 0 && !side.closed) side.link.send({ type: 'window', channel: side.channel, bytes: more });
  };
  const violation = (side: Side) => {
    side.link.send({ type: 'close', channel: side.channel, error: { code: 'FLOW_CONTROL_VIOLATION', message: 'The agent sent more data than the window allowed.' } });
    ended(side === sourceSide ? 'source' : 'target');
  };
  const attach = (which: 'source' | 'target', endpoint: (side: Side) => ChannelEndpoint) => (channel: number, peerWindow: number, link: ChannelLink): ChannelEndpoint => {
    const side: Side = { channel, link, sender: new ChannelSender(channel, peerWindow, (frame) => link.send(frame)), window: new ReceiveWindow(STREAM_WINDOW), closed: false };
    if (which === 'source') sourceSide = side;
    else targetSide = side;
    return endpoint(side);
  };

  await agents.openChannel(target.agent, target.spec, STREAM_WINDOW, attach('target', (side) => ({
    onData(type, payload) {
      if (side.closed) return;
      if (!side.window.receive(payload.byteLength)) return violation(side);
      if (type === 'data') hooks.targetStatus(payload);
      grant(side, payload.byteLength, true);
    },
    onWindow(bytes) {
      if (!side.closed) side.sender.grant(bytes);
    },
    onEof() {},
    onClose: () => ended('target'),
    onLinkLost: () => ended('target'),
  })));
  try {
    await agents.openChannel(source.agent, source.spec, STREAM_WINDOW, attach('source', (side) => ({
      onData(type, payload) {
        if (side.closed) return;
        if (!side.window.receive(payload.byteLength)) return violation(side);
        if (type === 'stderr') {
          hooks.sourceStatus(payload);
          return grant(side, payload.byteLength, true);
        }
        const to = targetSide!;
        // the payload is the websocket message's own memory, after its own frame header: it goes
        // out as is (the header rewritten in place) once the target's credit allows
        if (to.closed) return grant(side, payload.byteLength, true);
        to.sender.write('data', payload, () => grant(side, payload.byteLength, false), true);
      },
      onWindow(bytes) {
        if (!side.closed) side.sender.grant(bytes);
      },
      onEof() {
        // the end of the op stream: the target ends once it has applied everything before it
        if (sourceEnded) return;
        sourceEnded = true;
        const to = targetSide!;
        const eof = () => {
          if (!to.closed) to.link.send({ type: 'eof', channel: to.channel });
        };
        if (to.sender.queuedBytes === 0) eof();
        else to.sender.onDrain = eof;
      },
      onClose: () => ended('source'),
      onLinkLost: () => ended('source'),
    })));
  } catch (error) {
    close(targetSide);
    throw error;
  }
  return {
    command(line) {
      if (sourceSide && !sourceSide.closed) sourceSide.sender.write('data', Buffer.from(`${line}\n`));
    },
    close() {
      close(sourceSide);
      close(targetSide);
    },
  };
}

/**
 * The `ended` hook for a pipe being opened: a side can end before openSyncPipe resolves (its
 * agent went away meanwhile); that end is handed to `then` once `opened` gives the pipe.
 */
export function endedOnceOpened(then: (pipe: SyncPipe, side: 'source' | 'target') => void): { ended(side: 'source' | 'target'): void; opened(pipe: SyncPipe): void } {
  let pipe: SyncPipe | undefined;
  let early: 'source' | 'target' | undefined;
  return {
    ended: (side) => {
      if (pipe) then(pipe, side);
      else early ??= side;
    },
    opened: (opened) => {
      pipe = opened;
      if (early) then(opened, early);
    },
  };
}

/** A side's status bytes as lines for `onLine` (bounded by the line limit); a line that throws (malformed, too long) goes to `fail`. */
export function statusLines(onLine: (line: string) => void, fail: (error: unknown) => void): (bytes: Uint8Array) => void {
  const lines = new LineSplitter(MAX_SYNC_LINE_BYTES, onLine);
  return (bytes) => {
    try {
      lines.push(bytes);
    } catch (error) {
      fail(error);
    }
  };
}

export function parseJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}
