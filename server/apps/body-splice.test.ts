import { request as httpRequest, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { AgentFrame } from '../../protocol/agent.ts';
import { createExecSession } from '../agents/exec-session.ts';
import { HeadGate, SPLICE_MIN_BYTES, spliceableLength } from './body-splice.ts';

/**
 * The head gate between a real server end of a `tcp` channel (createExecSession, fed frames as the
 * agent link would) and Node's real HTTP client: the channel's side is den's own seam, the HTTP
 * parsing is Node's.
 */
const WINDOW = 256 * 1024;

describe('HeadGate', () => {
  it('hands Node exactly the head, then the body to the sink alone; credit follows the sink', async () => {
    const channel = openChannel();
    const exchange = channel.get({ claim: true });
    await exchange.sent;
    const body = pattern(200 * 1024);
    // the head and the body's first bytes in one frame, the rest in two
    channel.feed(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nX-App: yes\r\n\r\n`), body.subarray(0, 1000)]));
    channel.feed(body.subarray(1000, 150_000));
    channel.feed(body.subarray(150_000));
    const { response, claimed, sink, nodeBytes } = await exchange.result;
    expect(claimed).toBe(true);
    expect(response.headers['x-app']).toBe('yes');
    expect(Buffer.concat(sink.chunks).equals(body)).toBe(true);
    expect(sink.ended).toBe(true);
    expect(nodeBytes()).toBe(0);
    // nothing of the body was granted back while the sink held it; once it drained, all of it but
    // what waits for the next grant (grants go in quarters of the window, protocol/agent-flow.ts)
    expect(granted(channel.frames)).toBe(0);
    for (const done of sink.dones.splice(0)) done();
    expect(granted(channel.frames)).toBeGreaterThan(body.length - WINDOW / 4);
  });

  it('finds a head split over frames, after an interim 103, and splices the body of the final response', async () => {
    const channel = openChannel();
    const exchange = channel.get({ claim: true });
    await exchange.sent;
    const body = pattern(5000);
    channel.feed('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r');
    channel.feed(`\nContent-Length: ${body.length}\r`);
    channel.feed(Buffer.concat([Buffer.from('\n\r\n'), body]));
    const { claimed, sink } = await exchange.result;
    expect(claimed).toBe(true);
    expect(Buffer.concat(sink.chunks).equals(body)).toBe(true);
  });

  it('leaves a response nobody claims to Node, and splices the next one on the same connection', async () => {
    const channel = openChannel();
    const first = channel.get({ claim: false });
    await first.sent;
    channel.feed('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello');
    const small = await first.result;
    expect(small.claimed).toBe(false);
    expect(small.nodeBody()).toBe('hello');
    const second = channel.get({ claim: true });
    await second.sent;
    channel.feed('HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc');
    const large = await second.result;
    expect(large.claimed).toBe(true);
    expect(Buffer.concat(large.sink.chunks).toString()).toBe('abc');
  });

  it('claims nothing of a head with a bare LF (Node may see its end elsewhere), nor outside a head', async () => {
    const channel = openChannel();
    const exchange = channel.get({ claim: true });
    await exchange.sent;
    channel.feed('HTTP/1.1 200 OK\r\nContent-Length: 5\nX-A: b\r\n\r\nhello');
    const outcome = await Promise.race([exchange.result, exchange.failed]);
    // Node either reads the response itself or refuses the head; the gate took nothing either way
    if (outcome !== 'failed') {
      expect(outcome.claimed).toBe(false);
      expect(outcome.sink.chunks).toEqual([]);
    }
    expect(channel.gate.takeBody(10, { write: () => {}, end: () => {} })).toBe(false);
  });
});

describe('spliceableLength', () => {
  const response = (statusCode: number, headers: Record<string, string>) => ({ statusCode, headers }) as unknown as IncomingMessage;
  it('takes only a GET body of one plain Content-Length of at least SPLICE_MIN_BYTES', () => {
    const size = String(SPLICE_MIN_BYTES);
    expect(spliceableLength('GET', response(200, { 'content-length': size }))).toBe(SPLICE_MIN_BYTES);
    expect(spliceableLength('GET', response(206, { 'content-length': size }))).toBe(SPLICE_MIN_BYTES);
    expect(spliceableLength('HEAD', response(200, { 'content-length': size }))).toBeUndefined();
    expect(spliceableLength('POST', response(200, { 'content-length': size }))).toBeUndefined();
    expect(spliceableLength('GET', response(204, { 'content-length': size }))).toBeUndefined();
    expect(spliceableLength('GET', response(304, { 'content-length': size }))).toBeUndefined();
    expect(spliceableLength('GET', response(200, { 'content-length': String(SPLICE_MIN_BYTES - 1) }))).toBeUndefined();
    expect(spliceableLength('GET', response(200, { 'content-length': size, 'transfer-encoding': 'chunked' }))).toBeUndefined();
    expect(spliceableLength('GET', response(200, { 'content-length': `${size}, ${size}` }))).toBeUndefined();
    expect(spliceableLength('GET', response(200, {}))).toBeUndefined();
  });
});

/** A channel's server end with a gate, as the upstream pool makes it, and a way to send one GET over it. */
function openChannel() {
  const frames: AgentFrame[] = [];
  const { session, endpoint } = createExecSession(1, 1024 * 1024, (frame) => frames.push(frame), () => {}, WINDOW);
  const gate = new HeadGate((take) => session.divertOutput!(take));
  const socket = session.stdio as Duplex & Record<string, unknown>;
  for (const method of ['setKeepAlive', 'setNoDelay', 'setTimeout', 'ref', 'unref']) socket[method] = () => socket;
  const feed = (bytes: string | Buffer) => endpoint.onData('data', typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  const get = ({ claim }: { claim: boolean }) => {
    const sink = { chunks: [] as Buffer[], dones: [] as (() => void)[], ended: false };
    const nodeParts: Buffer[] = [];
    const request = httpRequest({ path: '/', headers: { connection: 'keep-alive' }, createConnection: () => socket as never });
    request.once('socket', () => gate.expectHead());
    const failed = new Promise<'failed'>((resolve) => request.once('error', () => resolve('failed')));
    const result = new Promise<{ response: IncomingMessage; claimed: boolean; sink: typeof sink; nodeBytes: () => number; nodeBody: () => string }>((resolve) => {
      request.on('response', (response: IncomingMessage) => {
        const length = Number(response.headers['content-length']);
        const claimed = claim && gate.takeBody(length, { write: (chunk, done) => (sink.chunks.push(Buffer.from(chunk)), sink.dones.push(done)), end: () => (sink.ended = true) });
        const outcome = { response, claimed, sink, nodeBytes: () => nodeParts.reduce((sum, part) => sum + part.length, 0), nodeBody: () => Buffer.concat(nodeParts).toString() };
        if (claimed) return resolve(outcome);
        response.on('data', (part: Buffer) => nodeParts.push(part));
        response.on('end', () => resolve(outcome));
      });
    });
    request.end();
    // the request left (its frames were sent) before the test answers it
    const sent = new Promise((resolve) => request.once('finish', resolve));
    return { sent, result, failed };
  };
  return { frames, gate, feed, get };
}

function granted(frames: AgentFrame[]): number {
  return frames.reduce((sum, frame) => sum + (frame.type === 'window' ? frame.bytes : 0), 0);
}

function pattern(bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) out[i] = (i * 13 + (i >> 10)) & 0xff;
  return out;
}
