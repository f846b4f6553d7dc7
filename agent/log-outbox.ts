import type { ControlFrameOf } from '../protocol/agent.ts';
import type { ScriptStream } from './startup.ts';

/** Log frames kept for resending after a reconnect; beyond this the oldest are dropped (and said so). */
const MAX_UNACKED_LOG_FRAMES = 5_000;

/**
 * Startup-script output waiting for the server's log_ack. Frames stay here until acknowledged,
 * so output written while the link was down, or in flight when it dropped, is sent again after
 * the next welcome (the server skips sequence numbers it already appended).
 */
export class LogOutbox {
  private readonly frames: ControlFrameOf<'log'>[] = [];
  private nextSeq = 1;
  private readonly onDrop: (count: number) => void;

  constructor(onDrop: (count: number) => void) {
    this.onDrop = onDrop;
  }

  /** Queues lines and returns the frame to send now (if connected). */
  append(script: string, stream: ScriptStream, lines: string[]): ControlFrameOf<'log'> {
    const frame: ControlFrameOf<'log'> = { type: 'log', seq: this.nextSeq++, script, stream, lines };
    this.frames.push(frame);
    if (this.frames.length > MAX_UNACKED_LOG_FRAMES) {
      this.onDrop(this.frames.splice(0, this.frames.length - MAX_UNACKED_LOG_FRAMES).length);
    }
    return frame;
  }

  /** The server appended everything up to `seq`. */
  ack(seq: number): void {
    while (this.frames.length > 0 && this.frames[0].seq <= seq) this.frames.shift();
  }

  /** What to resend after a reconnect, oldest first. */
  unacknowledged(): readonly ControlFrameOf<'log'>[] {
    return this.frames;
  }
}
