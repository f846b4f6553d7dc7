import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_TRANSPORT_QUEUE, pipeBounded } from './backpressure.ts';

const WAIT_MS = 10_000;
const CHUNK = 64 * 1024;
const TOTAL = 64 * 1024 * 1024;

describe('pipeBounded', () => {
  const sockets: Socket[] = [];
  afterEach(() => sockets.splice(0).forEach((socket) => socket.destroy()));

  it('stops reading the source while the transport holds more than its bound, though the channel takes every write, and delivers everything once the peer reads', async () => {
    // a real loopback connection whose receiving end does not read at first
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const accepted = new Promise<Socket>((resolve) => server.once('connection', resolve));
    const receiver = connect((server.address() as AddressInfo).port, '127.0.0.1');
    receiver.pause();
    const sender = await accepted;
    sockets.push(sender, receiver);
    server.close();

    let produced = 0;
    const source = new Readable({
      read() {
        if (produced >= TOTAL) return void this.push(null);
        produced += CHUNK;
        this.push(Buffer.alloc(CHUNK, 1));
      },
    });
    // like ssh2's channel under a huge client window: every write is accepted and goes to the socket at once
    const channel = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        sender.write(chunk);
        callback();
      },
      final(callback) {
        sender.end();
        callback();
      },
    });
    pipeBounded(source, channel, sender, { end: true });
    await waitFor(() => source.isPaused() && sender.writableLength > 0, 'the source to be paused');
    // the kernel buffers take some; what den holds stays near the bound, far from the 64 MiB produced
    expect(sender.writableLength).toBeLessThanOrEqual(MAX_TRANSPORT_QUEUE + CHUNK);
    expect(produced).toBeLessThan(TOTAL / 4);

    let received = 0;
    receiver.on('data', (chunk: Buffer) => (received += chunk.length));
    receiver.resume();
    await new Promise((resolve) => receiver.once('end', resolve));
    expect(received).toBe(TOTAL);
  });
});

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
