import { connect, type Socket } from 'node:net';
import { isAbsolute, join } from 'node:path';
import { CHANNEL_HEADER_BYTES, DEFAULT_CHANNEL_WINDOW, MAX_BULK_DATA_PAYLOAD, MAX_DATA_PAYLOAD, type TcpOpen } from '../protocol/agent.ts';
import { ChannelSender, ReceiveWindow } from '../protocol/agent-flow.ts';
import type { ChannelContext, ChannelHandler } from './exec.ts';
import { ConnectionReads, Slab, SlabPool, sendFramedInPlace } from './read-slabs.ts';

/** How long a connect may take before the open is refused: a filtered port must not hold the channel open forever. */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * What the connections the agent opens read into (net's `onread`): a channel that takes bulk frames
 * (protocol 1.8) reads a fast download into slabs from BULK_SLABS, framed in place and sent without
 * a copy (agent/read-slabs.ts), and its other reads into a shared buffer as large as a bulk frame;
 * the other channels read into a shared buffer of the classic frame size. A read in a shared buffer
 * is framed (and so copied, by encodeFrame) before the next read can reuse it; what must wait for
 * credit is copied out, so a channel's queue holds at most one read (64 KiB on a channel without
 * bulk frames, as before).
 */
const BULK_READS = Buffer.allocUnsafe(MAX_BULK_DATA_PAYLOAD);
const CLASSIC_READS = Buffer.allocUnsafe(MAX_DATA_PAYLOAD);
/** slabs of one bulk frame and its header; a few kept for the next download so a steady one allocates nothing */
const BULK_SLABS = new SlabPool(CHANNEL_HEADER_BYTES + MAX_BULK_DATA_PAYLOAD, 4);

/**
 * How a channel takes what its connection read; false: no credit left, stop reading. `from`: 'shared'
 * when the bytes are in a buffer the next read reuses (what waits for credit is copied), a slab when
 * they are in one (held once for the channel), none when the chunk is the channel's own.
 */
type OnRead = (chunk: Buffer, from?: 'shared' | Slab) => boolean;

/**
 * A `tcp` channel: a connection to host:port or to a unix socket in the workspace (port
 * forwarding, SSH direct-tcpip and direct-streamlocal, the app proxy). Answers open_ok once
 * connected, open_error TCP_CONNECT_FAILED otherwise. What the socket reads goes out as DATA
 * under the server's credit (the socket is paused while credit is exhausted); DATA from the
 * server is written to the socket and granted back as the writes complete. `eof` either way is a
 * half-close; the channel closes when the socket does.
 */
export function openTcpChannel(channel: number, spec: TcpOpen, peerWindow: number, context: ChannelContext, onClosed: () => void, claim: (connection: number) => Socket | undefined = () => undefined): ChannelHandler {
  if (spec.accepted !== undefined) {
    const accepted = claim(spec.accepted);
    if (!accepted) {
      context.send({ type: 'open_error', channel, code: 'TCP_CONNECT_FAILED', message: `The forwarded connection ${spec.accepted} is gone (it closed, or waited too long to be claimed).` });
      onClosed();
      return { onData() {}, onEof() {}, onWindow() {}, onSignal() {}, onResize() {}, abort() {} };
    }
    return serveTcp(channel, () => accepted, `the forwarded connection from ${accepted.remoteAddress ?? 'a unix socket'}`, peerWindow, spec.maxData, context, onClosed);
  }
  // a relative socket path is the workspace user's: resolved against HOME, as ssh -L resolves it on the far side
  const path = spec.path === undefined ? undefined : isAbsolute(spec.path) ? spec.path : join(context.home(), spec.path);
  const target = path ?? `${spec.host}:${spec.port}`;
  const open = (onRead: OnRead) => {
    const onread = spec.maxData !== undefined && spec.maxData > MAX_DATA_PAYLOAD ? slabReads(onRead, spec.maxData) : { buffer: CLASSIC_READS, callback: (bytes: number) => onRead(CLASSIC_READS.subarray(0, bytes), 'shared') };
    const socket = path ? connect({ path, onread }) : connect({ host: spec.host, port: spec.port!, onread });
    if ('reads' in onread) socket.once('close', () => onread.reads.leaveSlabs());
    return socket;
  };
  return serveTcp(channel, open, target, peerWindow, spec.maxData, context, onClosed);
}

/** The onread of a bulk channel's connection: slabs while it reads fast, BULK_READS otherwise. */
function slabReads(onRead: OnRead, maxData: number) {
  const reads = new ConnectionReads(BULK_SLABS, BULK_READS, maxData);
  const callback = (bytes: number) => {
    const { chunk, slab } = reads.took(bytes);
    return onRead(chunk, slab ?? 'shared');
  };
  return { buffer: () => reads.next(), callback, reads };
}

/**
 * One tcp channel over the socket `open` returns (given how to take what it reads): connecting
 * (open_ok once it connects), or already connected (a claimed connection: open_ok at once).
 */
function serveTcp(channel: number, open: (onRead: OnRead) => Socket, target: string, peerWindow: number, maxData: number | undefined, context: ChannelContext, onClosed: () => void): ChannelHandler {
  // a frame framed in place in a slab holds it until the link socket has written it; the rest of a
  // read that credit split is framed in place too once the part before it was written
  const sender = new ChannelSender(channel, peerWindow, (frame) => sendFramedInPlace(context.send, frame), maxData ?? MAX_DATA_PAYLOAD);
  const onRead: OnRead = (chunk, from) => {
    if (from instanceof Slab) return sender.write('data', chunk, () => from.release(), true);
    // sent now, the frames are copies; what waits for credit must outlive the shared read buffer
    const sendsAll = sender.queuedBytes === 0 && chunk.byteLength <= sender.availableCredit;
    return sender.write('data', from === 'shared' && !sendsAll ? Buffer.from(chunk) : chunk);
  };
  const socket = open(onRead);
  const receive = new ReceiveWindow(DEFAULT_CHANNEL_WINDOW);
  socket.setNoDelay(true);
  let connected = false;
  let finished = false;
  /** why an established connection ended, when it did not end cleanly */
  let closeError: { code: string; message: string } | undefined;
  const finish = (error?: { code: string; message: string }) => {
    if (finished) return;
    finished = true;
    if (!connected) {
      context.send({ type: 'open_error', channel, code: 'TCP_CONNECT_FAILED', message: error?.message ?? `Nothing accepted a connection to ${target} in the workspace.` });
    } else {
      context.send({ type: 'close', channel, ...(error ? { error } : {}) });
    }
    sender.close();
    onClosed();
  };
  const timer = setTimeout(() => {
    socket.destroy();
    finish({ code: 'TCP_CONNECT_FAILED', message: `Connecting to ${target} in the workspace took longer than ${CONNECT_TIMEOUT_MS / 1000} s.` });
  }, CONNECT_TIMEOUT_MS);
  timer.unref();

  const onConnected = () => {
    clearTimeout(timer);
    connected = true;
    context.send({ type: 'open_ok', channel, window: DEFAULT_CHANNEL_WINDOW });
  };
  // a claimed connection was accepted paused (agent/listen.ts): it flows once its handlers are in place, below
  const claimed = !socket.connecting;
  if (claimed) onConnected();
  else socket.once('connect', onConnected);
  socket.on('error', (error: NodeJS.ErrnoException) => {
    clearTimeout(timer);
    if (!connected) return finish({ code: 'TCP_CONNECT_FAILED', message: connectFailure(target, error) });
    // a reset after connecting: the channel closes with the reason (the 'close' event follows)
    closeError = { code: 'TCP_CONNECTION_LOST', message: `The connection to ${target} in the workspace failed: ${error.message}.` };
  });
  // everything read must reach the server before the eof and the close: those wait for the queue to drain
  const whenDrained: (() => void)[] = [];
  sender.onDrain = () => {
    socket.resume();
    for (const done of whenDrained.splice(0)) done();
  };
  const afterQueued = (done: () => void) => {
    if (sender.queuedBytes === 0) done();
    else whenDrained.push(done);
  };
  // a connection the agent opened reads through onRead (net's onread: false pauses it); a claimed one emits 'data'
  socket.on('data', (chunk: Buffer) => {
    if (!onRead(chunk)) socket.pause();
  });
  socket.on('end', () => afterQueued(() => !finished && context.send({ type: 'eof', channel })));
  socket.on('close', () => {
    clearTimeout(timer);
    if (connected) afterQueued(() => finish(closeError));
  });
  if (claimed) socket.resume();

  return {
    onData(payload) {
      if (finished) return;
      if (!receive.receive(payload.byteLength)) {
        socket.destroy();
        closeError = { code: 'FLOW_CONTROL_VIOLATION', message: 'The server sent more data than the window allowed.' };
        return finish(closeError);
      }
      if (socket.destroyed || socket.writableEnded) return grant(receive.consume(payload.byteLength, true));
      socket.write(payload, () => grant(receive.consume(payload.byteLength, socket.writableLength === 0)));
    },
    onEof() {
      if (!socket.destroyed) socket.end();
    },
    onWindow(bytes) {
      sender.grant(bytes);
    },
    onSignal() {},
    onResize() {},
    abort() {
      // the server closed the channel (it already knows): end the connection without another frame
      finished = true;
      clearTimeout(timer);
      sender.close();
      socket.destroy();
      onClosed();
    },
  };

  function grant(bytes: number): void {
    if (bytes > 0 && !finished) context.send({ type: 'window', channel, bytes });
  }
}

function connectFailure(target: string, error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case 'ECONNREFUSED':
      return `Nothing listens on ${target} in the workspace; start the program that should serve it, or check the port.`;
    case 'ENOENT':
      return `There is no unix socket ${target} in the workspace; check the path.`;
    case 'EACCES':
      return `The workspace user may not connect to ${target}.`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `The workspace cannot resolve the host of ${target}.`;
    default:
      return `Connecting to ${target} in the workspace failed: ${error.message}.`;
  }
}
