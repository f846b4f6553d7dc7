import { CHANNEL_HEADER_BYTES, MAX_DATA_PAYLOAD, type AgentFrame, type DataFrame } from '../protocol/agent.ts';

/**
 * Where the connections of bulk `tcp` channels read (net's `onread`, whose buffer may be a function
 * that Node calls for the target of each next read): into slabs, consecutive reads one after the
 * other with CHANNEL_HEADER_BYTES left free before each, so every read becomes a DATA frame in
 * place (the header written into the gap, DataFrame `headroom`) and goes to the link without a
 * copy. A slab is lent, not shared: it returns to the pool once its last read was framed and every
 * frame cut from it was written to the link socket (`hold` / `release`), so nothing is overwritten
 * while the socket still holds it, and a fast download allocates no buffer per read or per frame.
 *
 * An idle connection must not pin a slab: after a read shorter than SLAB_MIN_READ the connection
 * reads into the shared buffer again (copied once, as before); a read of at least that size moves
 * it back to slabs. Held memory stays near the bytes in flight, which the channel's credit bounds:
 * slabs fill front to back, so all but a connection's current one are used up to SLAB_MIN_READ.
 */
export class SlabPool {
  private readonly free: Slab[] = [];
  readonly slabBytes: number;
  readonly keepFree: number;

  constructor(slabBytes: number, keepFree: number) {
    this.slabBytes = slabBytes;
    this.keepFree = keepFree;
  }

  take(): Slab {
    return this.free.pop() ?? new Slab(Buffer.allocUnsafe(this.slabBytes), (slab) => this.give(slab));
  }

  get freeSlabs(): number {
    return this.free.length;
  }

  private give(slab: Slab): void {
    if (this.free.length < this.keepFree) this.free.push(slab.reset());
  }
}

/** A read shorter than this sends a connection back to the shared buffer (it looks idle or interactive, not bulk). */
export const SLAB_MIN_READ = MAX_DATA_PAYLOAD;

/** One slab: reads at increasing offsets, lent until its holders release it. */
export class Slab {
  readonly buffer: Buffer;
  private readonly onFree: (slab: Slab) => void;
  /** where the next read's header gap starts */
  private used = 0;
  private holds = 0;
  /** every frame framed in place up to this offset was written */
  private writtenTo = 0;
  /** still some connection's current slab (more reads may land in it) */
  private current = true;

  constructor(buffer: Buffer, onFree: (slab: Slab) => void) {
    this.buffer = buffer;
    this.onFree = onFree;
    SLABS.set(buffer.buffer, this);
  }

  /** The target of the next read (at most `size` bytes) after a header gap; undefined when less than SLAB_MIN_READ is left. */
  target(size: number): Buffer | undefined {
    const start = this.used + CHANNEL_HEADER_BYTES;
    if (this.buffer.byteLength - start < SLAB_MIN_READ) return undefined;
    return this.buffer.subarray(start, Math.min(this.buffer.byteLength, start + size));
  }

  /** `bytes` were read into the last target, which ends up holding them (one hold, released with `release`). */
  filled(target: Buffer, bytes: number): Buffer {
    this.used = target.byteOffset - this.buffer.byteOffset + bytes;
    this.holds++;
    return target.subarray(0, bytes);
  }

  hold(): void {
    this.holds++;
  }

  /**
   * Whether the CHANNEL_HEADER_BYTES before `payload` may take its frame's header: true for the
   * rest of a read that credit split, once the part before it was written (the link writes in order).
   */
  freeBefore(payload: Uint8Array): boolean {
    return payload.byteOffset - this.buffer.byteOffset <= this.writtenTo;
  }

  /** A frame framed in place, ending with `payload`, was written by the link. */
  written(payload: Uint8Array): void {
    this.writtenTo = Math.max(this.writtenTo, payload.byteOffset - this.buffer.byteOffset + payload.byteLength);
  }

  release(): void {
    this.holds--;
    this.freeIfDone();
  }

  /** No more reads land here: it goes back to the pool once its holders are done. */
  retire(): void {
    this.current = false;
    this.freeIfDone();
  }

  reset(): this {
    this.used = 0;
    this.holds = 0;
    this.writtenTo = 0;
    this.current = true;
    return this;
  }

  private freeIfDone(): void {
    if (!this.current && this.holds === 0) this.onFree(this);
  }
}

/** The slab `bytes` lie in, if they lie in one. */
export function slabOf(bytes: Uint8Array): Slab | undefined {
  return SLABS.get(bytes.buffer);
}

const SLABS = new WeakMap<ArrayBufferLike, Slab>();

/**
 * The reads of one connection: `next` is the onread buffer function, `took` tells where the bytes
 * of a read are: in a slab (held for the caller, who releases it once the bytes are framed), or
 * in the shared buffer (to copy before the next read).
 */
export class ConnectionReads {
  private readonly pool: SlabPool;
  private readonly shared: Buffer;
  private readonly readSize: number;
  private slab: Slab | undefined;
  private inSlabs = false;
  private last: Buffer | undefined;

  constructor(pool: SlabPool, shared: Buffer, readSize: number) {
    this.pool = pool;
    this.shared = shared;
    this.readSize = readSize;
  }

  next(): Buffer {
    if (!this.inSlabs) return (this.last = this.shared);
    let target = this.slab?.target(this.readSize);
    if (!target) {
      this.slab?.retire();
      this.slab = this.pool.take();
      target = this.slab.target(this.readSize)!;
    }
    return (this.last = target);
  }

  /** Where the `bytes` just read are: `slab` set when they are in one (and held once for the caller). */
  took(bytes: number): { chunk: Buffer; slab?: Slab } {
    const target = this.last!;
    const bulk = bytes >= SLAB_MIN_READ;
    if (target === this.shared) {
      this.inSlabs = bulk;
      return { chunk: target.subarray(0, bytes) };
    }
    const slab = this.slab!;
    const chunk = slab.filled(target, bytes);
    if (!bulk) this.leaveSlabs();
    return { chunk, slab };
  }

  /** The connection is gone (or idle): its slab returns once its holders are done. */
  leaveSlabs(): void {
    this.inSlabs = false;
    this.slab?.retire();
    this.slab = undefined;
  }
}

/**
 * Copies of a stream's chunks into slabs, for a source that cannot read into them itself (a
 * child's stdout pipe: Node allocates every read): each chunk of at least SLAB_MIN_READ is copied
 * after a header gap, the copy encodeFrame would otherwise make into a fresh frame, so a busy
 * stream allocates one buffer per read instead of two (ADR 0034 did the same for connections,
 * without even that copy). A shorter chunk leaves the slab (framed by a copy, as before), so an
 * idle or interactive stream pins none.
 */
export class SlabCopies {
  private readonly pool: SlabPool;
  private slab: Slab | undefined;

  constructor(pool: SlabPool) {
    this.pool = pool;
  }

  /** `chunk` copied into a slab (held once for the caller, who releases it once framed), or undefined to send it as it is. */
  place(chunk: Buffer): { chunk: Buffer; slab: Slab } | undefined {
    if (chunk.byteLength < SLAB_MIN_READ || chunk.byteLength > this.pool.slabBytes - CHANNEL_HEADER_BYTES) {
      this.leave();
      return undefined;
    }
    let slab = this.slab;
    let target = slab?.target(chunk.byteLength);
    if (!slab || !target || target.byteLength < chunk.byteLength) {
      slab?.retire();
      slab = this.slab = this.pool.take();
      target = slab.target(chunk.byteLength)!;
    }
    chunk.copy(target);
    return { chunk: slab.filled(target, chunk.byteLength), slab };
  }

  /** The stream ended (or went quiet): its slab returns once its holders are done. */
  leave(): void {
    this.slab?.retire();
    this.slab = undefined;
  }
}

/**
 * Sends a DATA frame through the link's `send`: framed in place when its payload lies in a slab
 * and the bytes before it are free (the slab held until the link socket wrote the frame), else
 * as it is (copied by encodeFrame).
 */
export function sendFramedInPlace(send: (frame: AgentFrame, written?: () => void) => void, frame: DataFrame): void {
  const slab = slabOf(frame.payload);
  if (!slab || !(frame.headroom || slab.freeBefore(frame.payload))) return send(frame);
  slab.hold();
  send({ ...frame, headroom: true }, () => {
    slab.written(frame.payload);
    slab.release();
  });
}
