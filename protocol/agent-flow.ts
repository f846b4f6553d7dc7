import { MAX_DATA_PAYLOAD, type DataFrame } from './agent.ts';

/**
 * Per-channel credit accounting of the agent link, shared by the agent and the server so both
 * sides follow the same rules. Pure TypeScript: no streams, no sockets.
 *
 * The receiver advertises a window W. The sender may have at most W bytes (DATA + STDERR payloads
 * together) that the receiver has not yet granted back. The receiver grants bytes back (WINDOW
 * frames) once its consumer has drained them, batched to a quarter of the window so a busy
 * channel sends few window frames.
 */
export class ReceiveWindow {
  /** bytes the sender may still send before it must wait */
  private credit: number;
  /** bytes the consumer drained that were not granted back yet */
  private pending = 0;
  private readonly threshold: number;
  readonly window: number;

  constructor(window: number) {
    this.window = window;
    this.credit = window;
    this.threshold = Math.max(1, Math.floor(window / 4));
  }

  /** Accounts for received bytes; false when the sender overran its credit (a protocol violation). */
  receive(bytes: number): boolean {
    if (bytes > this.credit) return false;
    this.credit -= bytes;
    return true;
  }

  /**
   * The consumer drained `bytes`. Returns how many bytes to grant now (0 = wait for more).
   * `flush` grants whatever is pending, for a consumer that has nothing buffered any more.
   */
  consume(bytes: number, flush = false): number {
    this.pending += bytes;
    if (this.pending === 0 || (this.pending < this.threshold && !flush)) return 0;
    const grant = this.pending;
    this.pending = 0;
    this.credit += grant;
    return grant;
  }
}

interface QueuedChunk {
  type: DataFrame['type'];
  bytes: Uint8Array;
  /** the bytes before `bytes` may take the frame header (until a part of the chunk was sent) */
  headroom: boolean;
  done?: () => void;
}

/**
 * The sending half of a channel: splits writes into frames of at most `maxPayload` bytes
 * (MAX_DATA_PAYLOAD unless the receiver declared more, protocol 1.8),
 * sends while credit lasts and queues the rest until the peer grants more. The caller pauses its
 * source when `write` returns false and resumes it from `onDrain`, so the queue holds at most
 * about one source chunk.
 */
export class ChannelSender {
  private credit: number;
  private readonly queue: QueuedChunk[] = [];
  private queued = 0;
  private closed = false;
  /** called when the queue becomes empty after having held data */
  onDrain: () => void = () => {};

  readonly channel: number;
  private readonly send: (frame: DataFrame) => void;
  private readonly maxPayload: number;

  constructor(channel: number, initialCredit: number, send: (frame: DataFrame) => void, maxPayload = MAX_DATA_PAYLOAD) {
    this.channel = channel;
    this.send = send;
    this.credit = initialCredit;
    this.maxPayload = maxPayload;
  }

  /**
   * Sends or queues `bytes`; true when everything went out now, false when some waits for credit.
   * `headroom`: the CHANNEL_HEADER_BYTES before `bytes` in its buffer may be overwritten (DataFrame).
   */
  write(type: DataFrame['type'], bytes: Uint8Array, done?: () => void, headroom = false): boolean {
    if (this.closed || bytes.byteLength === 0) {
      done?.();
      return true;
    }
    this.queue.push({ type, bytes, headroom, done });
    this.queued += bytes.byteLength;
    this.flush();
    return this.queued === 0;
  }

  /** The peer granted `bytes` more credit. */
  grant(bytes: number): void {
    this.credit += bytes;
    const hadQueue = this.queued > 0;
    this.flush();
    if (hadQueue && this.queued === 0) this.onDrain();
  }

  get queuedBytes(): number {
    return this.queued;
  }

  get availableCredit(): number {
    return this.credit;
  }

  /** Drops queued data (the channel is gone); pending callbacks are still called so writers do not hang. */
  close(): void {
    this.closed = true;
    for (const chunk of this.queue.splice(0)) chunk.done?.();
    this.queued = 0;
  }

  private flush(): void {
    while (this.queue.length > 0 && this.credit > 0) {
      const head = this.queue[0];
      const size = Math.min(head.bytes.byteLength, this.credit, this.maxPayload);
      const payload = head.bytes.subarray(0, size);
      this.credit -= size;
      this.queued -= size;
      const frame: DataFrame = { type: head.type, channel: this.channel, payload, ...(head.headroom ? { headroom: true } : {}) };
      if (size === head.bytes.byteLength) {
        this.queue.shift();
        this.send(frame);
        head.done?.();
      } else {
        // the rest's header room is the part just sent, which the socket may still hold
        head.bytes = head.bytes.subarray(size);
        head.headroom = false;
        this.send(frame);
      }
    }
  }
}
