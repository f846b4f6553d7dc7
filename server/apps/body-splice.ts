import type { IncomingMessage } from 'node:http';
import type { OutputDivert } from '../agents/hub-types.ts';

/**
 * The smallest response body den takes out of Node's HTTP client (ADR 0033): below it the copy
 * saved is worth less than the keep-alive connection a spliced response gives up.
 */
export const SPLICE_MIN_BYTES = 1024 * 1024;

/** Where a spliced body goes (the client's response): `done` once a chunk has drained. */
export interface BodySink {
  write(chunk: Buffer, done: () => void): void;
  /** the whole body went out */
  end(): void;
}

/**
 * Sits between an app connection's `tcp` channel and Node's HTTP client (ExecSession.divertOutput)
 * so that a large response body can skip the client: Node's parser gets every response head, and
 * exactly the head, so it still decides what the response is (status, headers, framing, and
 * refusing what is malformed); for a response den may splice, the body's bytes then go straight
 * to the browser's response, counted against its Content-Length, and never through the parser
 * (which copies every byte) or an IncomingMessage.
 *
 * Between `expectHead` (a request went out on the connection) and the end of a response head,
 * the gate scans for the head's end (CRLF CRLF) and passes the bytes on up to it. Node parses the
 * head and emits 'response' while the gate passes it on; only then may `takeBody` claim the body.
 * A response Node did not parse at that moment, a head with a bare LF (where Node's idea of its
 * end could differ from the gate's), or a response nobody claims goes through Node as before, and
 * the gate passes everything on until the next `expectHead`. A spliced connection is left
 * mid-response as far as Node knows, so it is closed after the body, never reused.
 */
export class HeadGate {
  private readonly output: OutputDivert;
  private state: 'node' | 'head' | 'body' | 'done' = 'node';
  /** how much of CR LF CR LF ends what was scanned of the current head */
  private matched = 0;
  /** the head's first bytes (to tell an interim 1xx head, after which another head follows) */
  private start = '';
  private bareLf = false;
  /** true while the gate hands Node a whole head and nothing else: the only time takeBody may claim */
  private handingHead = false;
  private body: { remaining: number; sink: BodySink } | undefined;

  constructor(divert: (take: (payload: Buffer) => void) => OutputDivert) {
    this.output = divert((payload) => this.take(payload));
  }

  /** A request went out on this connection: what comes next starts with a response head. */
  expectHead(): void {
    this.state = 'head';
    this.resetHead();
    this.body = undefined;
  }

  /**
   * Claims the next `length` bytes as the body of the response whose head Node is parsing now
   * (call from the request's 'response' event). False when the gate cannot: the response is not
   * at a head's end the gate knows, so it must be read from Node's IncomingMessage.
   */
  takeBody(length: number, sink: BodySink): boolean {
    if (!this.handingHead || this.body || length <= 0) return false;
    this.body = { remaining: length, sink };
    return true;
  }

  private take(payload: Buffer): void {
    if (this.state === 'node') return this.output.deliver(payload);
    if (this.state === 'body') return this.toBody(payload);
    if (this.state === 'done') return; // bytes past a spliced body: the connection is being closed
    let offset = 0;
    while (this.state === 'head' && offset < payload.byteLength) {
      const end = this.headEnd(payload, offset);
      if (end < 0) return this.output.deliver(offset === 0 ? payload : payload.subarray(offset));
      const interim = /^HTTP\/1\.[01] 1\d\d /.test(this.start);
      this.handingHead = !this.bareLf;
      this.output.deliver(payload.subarray(offset, end));
      this.handingHead = false;
      offset = end;
      if (this.body) this.state = 'body';
      else if (!interim) this.state = 'node';
      this.resetHead();
    }
    if (offset === payload.byteLength) return;
    if (this.state === 'body') this.toBody(payload.subarray(offset));
    else if (this.state === 'node') this.output.deliver(payload.subarray(offset));
  }

  private toBody(payload: Buffer): void {
    const body = this.body!;
    const size = Math.min(payload.byteLength, body.remaining);
    body.remaining -= size;
    this.output.hold(size);
    body.sink.write(size === payload.byteLength ? payload : payload.subarray(0, size), () => this.output.release(size));
    if (body.remaining > 0) return;
    this.state = 'done';
    body.sink.end();
  }

  /** The index just past the CR LF CR LF that ends the head, or -1 when `payload` does not hold it. */
  private headEnd(payload: Buffer, offset: number): number {
    if (this.start.length < 16) this.start += payload.toString('latin1', offset, Math.min(payload.byteLength, offset + 16 - this.start.length));
    for (let i = offset; i < payload.byteLength; i++) {
      const byte = payload[i];
      if (byte === CR) {
        this.matched = this.matched === 2 ? 3 : 1;
      } else if (byte === LF) {
        if (this.matched === 3) return i + 1;
        if (this.matched !== 1) this.bareLf = true;
        this.matched = this.matched === 1 ? 2 : 0;
      } else {
        this.matched = 0;
      }
    }
    return -1;
  }

  private resetHead(): void {
    this.matched = 0;
    this.start = '';
    this.bareLf = false;
  }
}

const CR = 0x0d;
const LF = 0x0a;

/**
 * The length of a response body den may splice (HeadGate): a GET's response with a body of one
 * plain Content-Length of at least SPLICE_MIN_BYTES and no Transfer-Encoding; undefined otherwise
 * (HEAD, 1xx, 204 and 304 have no body; chunked and close-delimited bodies stay with Node).
 */
export function spliceableLength(method: string, response: IncomingMessage): number | undefined {
  if (method !== 'GET' || response.headers['transfer-encoding'] !== undefined) return undefined;
  const status = response.statusCode ?? 0;
  if (status < 200 || status === 204 || status === 304) return undefined;
  const header = response.headers['content-length'];
  if (header === undefined || !/^\d{1,15}$/.test(header)) return undefined;
  const length = Number(header);
  return length >= SPLICE_MIN_BYTES ? length : undefined;
}
