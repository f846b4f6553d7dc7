import type { Readable, Writable } from 'node:stream';

/**
 * Above this many bytes queued on an SSH connection's transport (its TCP socket, or the tunnel's
 * websocket stream), output from the workspace waits. ssh2 writes a channel's data to the socket
 * whenever the client's window allows, whatever the socket has queued: a client that advertises
 * a huge window and stops reading would otherwise make den buffer all the workspace sends.
 */
export const MAX_TRANSPORT_QUEUE = 1024 * 1024;

/** The part of a socket (or stream) whose queue bounds the relay. */
export interface Transport {
  readonly writableLength: number;
  once(event: 'drain', listener: () => void): unknown;
}

/**
 * `from.pipe(to)`, except that `from` also waits while `transport` has more than
 * MAX_TRANSPORT_QUEUE bytes queued; with `end`, `to` ends when `from` does.
 */
export function pipeBounded(from: Readable, to: Writable, transport: Transport, options: { end: boolean }): void {
  let waits = 0;
  const resume = () => {
    if (--waits === 0) from.resume();
  };
  from.on('data', (chunk: Buffer) => {
    const accepted = to.write(chunk);
    const congested = transport.writableLength > MAX_TRANSPORT_QUEUE;
    if (accepted && !congested) return;
    from.pause();
    if (!accepted) {
      waits++;
      to.once('drain', resume);
    }
    if (congested) {
      waits++;
      transport.once('drain', resume);
    }
  });
  if (options.end) from.once('end', () => to.end());
}
