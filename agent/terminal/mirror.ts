import headless from '@xterm/headless';
import serializeAddon from '@xterm/addon-serialize';
import unicode11Addon from '@xterm/addon-unicode11';
import { MAX_SERVER_TEXT_BYTES } from '../../protocol/terminal.ts';

const { Terminal } = headless;
const { SerializeAddon } = serializeAddon;
const { Unicode11Addon } = unicode11Addon;

/** The room an `attached` message needs besides the snapshot (JSON escaping of ESC adds 5 bytes each). */
const SNAPSHOT_BUDGET_CHARS = Math.floor(MAX_SERVER_TEXT_BYTES / 2);

/**
 * A headless xterm.js fed with everything the pty printed, so a (re)attaching client gets the
 * exact screen, scrollback and modes (alternate screen of vim/less/htop included) instead of a
 * raw replay buffer. Parsing is asynchronous (xterm parses in ~12 ms slices); every operation is
 * queued behind the bytes written before it, so `snapshot()` returns the state after exactly the
 * bytes written so far — the session relies on that for a gapless handover to the live stream.
 *
 * `backlogBytes` (written but not parsed yet) is part of the session's flow control: the mirror
 * is a consumer like any client, and the pty pauses when it falls behind, so memory stays bounded.
 */
export class ScreenMirror {
  #term: InstanceType<typeof Terminal> | undefined;
  #serializer: InstanceType<typeof SerializeAddon> | undefined;
  /** the serialized state while hibernating (no headless terminal in memory) */
  #hibernated: string | undefined;
  #cols: number;
  #rows: number;
  readonly #scrollback: number;
  #backlog = 0;
  /** resizes and snapshots queued behind unparsed bytes */
  #pendingOps = 0;
  #title = '';
  #disposed = false;
  onDrained: () => void = () => {};

  constructor(cols: number, rows: number, scrollback: number) {
    this.#cols = cols;
    this.#rows = rows;
    this.#scrollback = scrollback;
    this.#wake();
  }

  get backlogBytes(): number {
    return this.#backlog;
  }

  get title(): string {
    return this.#title;
  }

  get hibernating(): boolean {
    return this.#hibernated !== undefined;
  }

  write(data: Uint8Array): void {
    if (this.#disposed) return;
    this.#backlog += data.byteLength;
    this.#wake().write(data, () => {
      this.#backlog -= data.byteLength;
      this.onDrained();
    });
  }

  /** Resizes after the bytes written so far are parsed: they were laid out for the old size. */
  resize(cols: number, rows: number): void {
    this.#cols = cols;
    this.#rows = rows;
    this.#after((term) => term.resize(cols, rows));
  }

  /** The serialized state after every byte written so far. */
  snapshot(): Promise<string> {
    if (this.#hibernated !== undefined && this.#backlog === 0) return Promise.resolve(this.#hibernated);
    return new Promise((resolve) => this.#after(() => resolve(this.#serialize())));
  }

  /**
   * Swaps the headless terminal (about 12 bytes per cell: ~1.5 MB at 120 x 1,040 lines) for its
   * serialized form (~0.1 MB) while the session is idle; the next write or resize replays it
   * (~20 ms for 1,000 lines). The fidelity is exactly that of a reattach snapshot.
   */
  hibernate(): void {
    if (this.#disposed || this.#hibernated !== undefined || this.#backlog > 0 || this.#pendingOps > 0 || !this.#term) return;
    this.#hibernated = this.#serialize();
    this.#term.dispose();
    this.#term = undefined;
    this.#serializer = undefined;
  }

  /** Rows of the active buffer as text (tests compare screens with it). */
  screenLines(): Promise<string[]> {
    return new Promise((resolve) =>
      this.#after((term) => {
        const buffer = term.buffer.active;
        const lines: string[] = [];
        for (let y = 0; y < term.rows; y++) lines.push(buffer.getLine(buffer.viewportY + y)?.translateToString(true) ?? '');
        resolve(lines);
      }),
    );
  }

  dispose(): void {
    this.#disposed = true;
    this.#term?.dispose();
    this.#term = undefined;
  }

  #wake(): InstanceType<typeof Terminal> {
    if (this.#term) return this.#term;
    const term = new Terminal({ cols: this.#cols, rows: this.#rows, scrollback: this.#scrollback, allowProposedApi: true });
    this.#serializer = new SerializeAddon();
    term.loadAddon(this.#serializer);
    // the browser measures with Unicode 11 (web/src/terminal.ts); widths must agree or a snapshot shifts wide characters
    term.loadAddon(new Unicode11Addon());
    term.unicode.activeVersion = '11';
    term.onTitleChange((title) => {
      this.#title = title;
    });
    // queued ahead of whatever the caller writes next, so order is kept
    if (this.#hibernated !== undefined) term.write(this.#hibernated);
    this.#hibernated = undefined;
    this.#term = term;
    return term;
  }

  #after(action: (term: InstanceType<typeof Terminal>) => void): void {
    if (this.#disposed) return;
    const term = this.#wake();
    this.#pendingOps++;
    term.write('', () => {
      this.#pendingOps--;
      action(term);
    });
  }

  #serialize(): string {
    // A wide terminal with colourful scrollback can serialize to many MB; halve the scrollback
    // until it fits one message rather than refusing the attach.
    let scrollback = this.#scrollback;
    for (;;) {
      const text = this.#serializer!.serialize({ scrollback });
      if (text.length <= SNAPSHOT_BUDGET_CHARS || scrollback === 0) return text;
      scrollback = Math.floor(scrollback / 2);
    }
  }
}
