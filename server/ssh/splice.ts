import type { Duplex } from 'node:stream';
import type { ExecSession } from '../agents/hub-types.ts';
import { pipeBounded, type Transport } from './backpressure.ts';

/**
 * Joins a client stream (an SSH direct-tcpip channel, a port-forward websocket) to a `tcp`
 * channel of the agent: bytes both ways with backpressure, a half-close either way passed on,
 * and the client stream closed once the workspace side is gone (or the other way round). What the
 * workspace sends waits while `transport` (the connection under the client stream) holds too much.
 */
export function spliceTcp(client: Duplex, tcp: ExecSession, transport: Transport, onActivity: () => void = () => {}): void {
  client.on('data', onActivity);
  client.pipe(tcp.stdio);
  pipeBounded(tcp.stdio, client, transport, { end: true });
  // an ssh2 channel overrides destroy() and never sets `destroyed`: remember that it closed
  let closed = false;
  const destroy = () => {
    if (!closed) client.destroy();
  };
  // the connection in the workspace is gone: close the client once everything it sent has been read
  const closeClient = () => (tcp.stdio.readableEnded ? destroy() : tcp.stdio.once('end', destroy));
  tcp.exit.then(closeClient, closeClient);
  client.once('close', () => {
    closed = true;
    if (!tcp.stdio.destroyed) tcp.stdio.destroy();
  });
  client.on('error', () => {});
}
