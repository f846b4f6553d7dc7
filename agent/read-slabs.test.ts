import { describe, expect, it } from 'vitest';
import { CHANNEL_HEADER_BYTES, decodeFrame, encodeFrame } from '../protocol/agent.ts';
import { ConnectionReads, SLAB_MIN_READ, SlabCopies, SlabPool, slabOf } from './read-slabs.ts';

const SLAB_BYTES = 4 * SLAB_MIN_READ;

/** Simulates net's onread: `bytes` read into the target `next` returned (filled with `fill`). */
function read(reads: ConnectionReads, bytes: number, fill = 1): ReturnType<ConnectionReads['took']> {
  reads.next().fill(fill, 0, bytes);
  return reads.took(bytes);
}

describe('ConnectionReads', () => {
  it('reads a fast connection into slabs one read after another, each with room for its frame header, framed without a copy', () => {
    const shared = Buffer.alloc(SLAB_BYTES);
    const reads = new ConnectionReads(new SlabPool(SLAB_BYTES, 2), shared, SLAB_BYTES);
    // the first read lands in the shared buffer; a large one moves the connection to slabs
    expect(read(reads, SLAB_MIN_READ).slab).toBeUndefined();
    const first = read(reads, SLAB_MIN_READ, 2);
    const second = read(reads, SLAB_MIN_READ, 3);
    expect(first.slab).toBeDefined();
    expect(second.slab).toBe(first.slab);
    expect(second.chunk.byteOffset).toBe(first.chunk.byteOffset + SLAB_MIN_READ + CHANNEL_HEADER_BYTES);
    expect(slabOf(first.chunk)).toBe(first.slab);

    const frame = encodeFrame({ type: 'data', channel: 9, payload: second.chunk, headroom: true }) as Uint8Array;
    expect(frame.buffer).toBe(second.slab!.buffer.buffer);
    const decoded = decodeFrame(frame) as { channel: number; payload: Uint8Array };
    expect(decoded.channel).toBe(9);
    expect(Buffer.from(decoded.payload).equals(Buffer.alloc(SLAB_MIN_READ, 3))).toBe(true);
    // the header went into the gap: the first read's bytes are intact
    expect(first.chunk.equals(Buffer.alloc(SLAB_MIN_READ, 2))).toBe(true);
  });

  it('starts a new slab when the current one has less than a minimum read left, and caps a read at the read size', () => {
    const reads = new ConnectionReads(new SlabPool(SLAB_BYTES, 2), Buffer.alloc(SLAB_BYTES), SLAB_MIN_READ + 100);
    read(reads, SLAB_MIN_READ);
    const taken = [1, 2, 3].map(() => {
      expect(reads.next().byteLength).toBe(SLAB_MIN_READ + 100);
      return reads.took(SLAB_MIN_READ + 100).slab;
    });
    // 3 reads and their gaps leave less than SLAB_MIN_READ of a 4 x SLAB_MIN_READ slab
    const fourth = read(reads, SLAB_MIN_READ);
    expect(new Set(taken).size).toBe(1);
    expect(fourth.slab).not.toBe(taken[0]);
  });

  it('returns a slab to the pool only once it is retired and every holder released it, and lends it again', () => {
    const pool = new SlabPool(SLAB_BYTES, 2);
    const reads = new ConnectionReads(pool, Buffer.alloc(SLAB_BYTES), SLAB_BYTES);
    read(reads, SLAB_MIN_READ);
    const { slab } = read(reads, SLAB_MIN_READ);
    slab!.hold(); // a frame cut from the read, still in the link socket
    reads.leaveSlabs();
    slab!.release(); // the read was framed
    expect(pool.freeSlabs).toBe(0);
    slab!.release(); // the frame was written
    expect(pool.freeSlabs).toBe(1);
    expect(pool.take()).toBe(slab);
  });

  it('sends a connection whose read was short back to the shared buffer, so an idle one holds no slab', () => {
    const shared = Buffer.alloc(SLAB_BYTES);
    const pool = new SlabPool(SLAB_BYTES, 2);
    const reads = new ConnectionReads(pool, shared, SLAB_BYTES);
    read(reads, SLAB_MIN_READ);
    const short = read(reads, 100);
    expect(short.slab).toBeDefined();
    expect(reads.next()).toBe(shared);
    short.slab!.release();
    expect(pool.freeSlabs).toBe(1);
  });

  it('lets the rest of a split read take its header in place only once the part before it was written', () => {
    const reads = new ConnectionReads(new SlabPool(SLAB_BYTES, 2), Buffer.alloc(SLAB_BYTES), SLAB_BYTES);
    read(reads, SLAB_MIN_READ);
    const { chunk, slab } = read(reads, 2 * SLAB_MIN_READ);
    const [sent, rest] = [chunk.subarray(0, SLAB_MIN_READ), chunk.subarray(SLAB_MIN_READ)];
    expect(slab!.freeBefore(rest)).toBe(false);
    slab!.written(sent);
    expect(slab!.freeBefore(rest)).toBe(true);
  });
});

describe('SlabCopies', () => {
  it('copies full reads into one slab after header gaps, framed in place with every byte intact', () => {
    const pool = new SlabPool(SLAB_BYTES, 2);
    const copies = new SlabCopies(pool);
    const first = copies.place(Buffer.alloc(SLAB_MIN_READ, 1))!;
    const second = copies.place(Buffer.alloc(SLAB_MIN_READ, 2))!;
    expect(second.slab).toBe(first.slab);
    expect(second.chunk.byteOffset).toBe(first.chunk.byteOffset + SLAB_MIN_READ + CHANNEL_HEADER_BYTES);
    const frame = encodeFrame({ type: 'stderr', channel: 4, payload: second.chunk, headroom: true }) as Uint8Array;
    expect(frame.buffer).toBe(second.slab.buffer.buffer);
    const decoded = decodeFrame(frame) as { type: string; payload: Uint8Array };
    expect(decoded.type).toBe('stderr');
    expect(Buffer.from(decoded.payload).equals(Buffer.alloc(SLAB_MIN_READ, 2))).toBe(true);
    expect(first.chunk.equals(Buffer.alloc(SLAB_MIN_READ, 1))).toBe(true);
  });

  it('leaves its slab on a short read (sent as it is), and the slab returns to the pool once released', () => {
    const pool = new SlabPool(SLAB_BYTES, 2);
    const copies = new SlabCopies(pool);
    const placed = copies.place(Buffer.alloc(SLAB_MIN_READ, 1))!;
    expect(copies.place(Buffer.alloc(10, 2))).toBeUndefined();
    expect(pool.freeSlabs).toBe(0);
    placed.slab.release();
    expect(pool.freeSlabs).toBe(1);
    // the next full read takes that slab again, from its start
    expect(copies.place(Buffer.alloc(SLAB_MIN_READ, 3))!.slab).toBe(placed.slab);
  });
});
