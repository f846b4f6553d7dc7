import { OutputAcks } from '../../protocol/terminal-acks.ts';
import {
  decodeServerMessage,
  encodeClientMessage,
  MAX_DATA_PAYLOAD,
  TERMINAL_CLOSE,
  TERMINAL_PROTOCOL,
  type ClientMessage,
} from '../../protocol/terminal.ts';

/** Backoff between reconnect attempts: 250 ms doubling to 10 s, with full jitter so a server restart is not met by every tab at once. */
const BACKOFF_BASE_MS = 250;
const BACKOFF_MAX_MS = 10_000;
/**
 * A connection that has not attached by then is given up and retried: a handshake or an attach
 * can hang on a half-dead network path or a server that is going away, and nothing else would
 * notice. Generous: a 1,000-line snapshot takes well under a second even on a loaded box.
 */
const ATTACH_TIMEOUT_MS = 15_000;
/** typing ahead of the first attach is kept up to this many units (a paste beyond it is dropped) */
const MAX_EARLY_INPUT = 64 * 1024;

export type ConnectionState =
  | { kind: 'connecting'; attempt: number }
  | { kind: 'attached'; sessionId: string }
  | { kind: 'reconnecting'; attempt: number; inMs: number; reason: string }
  | { kind: 'ended'; code: number }
  | { kind: 'failed'; message: string };

export interface TerminalConnectionOptions {
  /** ws(s) URL of the terminal endpoint */
  url: string;
  sessionId?: string;
  size(): { cols: number; rows: number };
  /** a (re)attach: reset the terminal, then write the snapshot */
  onAttached(info: { sessionId: string; cols: number; rows: number; snapshot: string; title?: string }): void;
  /** pty output; call `parsed(bytes)` from xterm.js's write callback */
  onOutput(data: Uint8Array): void;
  onState(state: ConnectionState): void;
  /**
   * The socket closed before it opened: the server refused the upgrade with an HTTP error, which
   * a browser cannot read (signed out, no such workspace) or the server is down. The page finds
   * out why through the API: `retry` at once (e.g. after signing in again), `backoff` as usual,
   * or stop with a message.
   */
  whenRefused?(): Promise<'retry' | 'backoff' | { failed: string }>;
}

/**
 * One terminal's websocket with protocol/terminal.ts, reconnecting with backoff until the session
 * ends. Every (re)connect reattaches to the same session id and gets a fresh snapshot, so
 * nothing printed while disconnected is lost (up to the scrollback).
 *
 * Flow control follows xterm.js's guide, with the acknowledgement on the wire: `parsed()` is
 * called from write callbacks and acks go out as protocol/terminal-acks.ts says (per
 * ACK_EVERY_BYTES, the remainder once output is quiet); the server stops the pty while we are
 * more than its high watermark behind.
 */
export class TerminalConnection {
  readonly #options: TerminalConnectionOptions;
  #ws: WebSocket | undefined;
  #sessionId: string | undefined;
  #attempt = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #disposed = false;
  #attached = false;
  readonly #acks = new OutputAcks((bytes) => {
    if (this.#attached) this.#send({ type: 'ack', bytes });
  });
  #generation = 0;
  /** the message of the server's last `error`, shown when it then closes for good */
  #lastError: string | undefined;
  /** waiting for whenRefused (maybe a sign-in): no reconnect in between */
  #checking = false;
  /** input typed before the first attach */
  #early: Array<string | Uint8Array> = [];

  constructor(options: TerminalConnectionOptions) {
    this.#options = options;
    this.#sessionId = options.sessionId;
    // come back at once when the network or the tab does, instead of waiting out the backoff
    addEventListener('online', this.#retryNow);
    document.addEventListener('visibilitychange', this.#retryNow);
    this.#connect();
  }

  /** Increments on every attach; write callbacks of an earlier attachment must not ack on this one. */
  get generation(): number {
    return this.#generation;
  }

  get sessionId(): string | undefined {
    return this.#sessionId;
  }

  /**
   * Keystrokes and pastes; dropped while disconnected (typing into a stale screen must not run
   * later), but kept until the page's first attach: what is typed while the page loads is meant
   * for the shell that is coming.
   */
  input(data: string | Uint8Array): void {
    if (!this.#attached) {
      if (this.#generation === 0 && this.#early.reduce((sum, early) => sum + early.length, 0) < MAX_EARLY_INPUT) this.#early.push(data);
      return;
    }
    if (typeof data === 'string') {
      // a large paste is split so no message exceeds the protocol's limit (a UTF-16 unit is at most 3 UTF-8 bytes)
      const step = Math.floor(MAX_DATA_PAYLOAD / 3);
      for (let i = 0; i < data.length; i += step) this.#send({ type: 'input', data: data.slice(i, i + step) });
    } else {
      for (let i = 0; i < data.byteLength; i += MAX_DATA_PAYLOAD) this.#send({ type: 'input', data: data.subarray(i, i + MAX_DATA_PAYLOAD) });
    }
  }

  resize(cols: number, rows: number): void {
    if (this.#attached) this.#send({ type: 'resize', cols, rows });
  }

  /** Bytes xterm.js has parsed (its write callback), for the attachment of `generation`. */
  parsed(bytes: number, generation: number): void {
    if (generation !== this.#generation) return;
    this.#acks.consumed(bytes);
  }

  /** Ends the shell, not just this tab's view of it. */
  closeSession(): void {
    this.#send({ type: 'close' });
  }

  dispose(): void {
    this.#disposed = true;
    this.#acks.stop();
    clearTimeout(this.#retryTimer);
    removeEventListener('online', this.#retryNow);
    document.removeEventListener('visibilitychange', this.#retryNow);
    this.#ws?.close(1000);
  }

  #connect(): void {
    if (this.#disposed) return;
    this.#options.onState({ kind: 'connecting', attempt: this.#attempt });
    const ws = new WebSocket(this.#options.url);
    ws.binaryType = 'arraybuffer';
    this.#ws = ws;
    let opened = false;
    const attachTimer = setTimeout(() => ws.close(1000, 'no answer to attach'), ATTACH_TIMEOUT_MS);
    ws.addEventListener('message', () => clearTimeout(attachTimer), { once: true });
    ws.onopen = () => {
      opened = true;
      const { cols, rows } = this.#options.size();
      this.#send({ type: 'attach', protocol: TERMINAL_PROTOCOL, sessionId: this.#sessionId, cols, rows });
    };
    ws.onmessage = (event) => this.#message(event.data as string | ArrayBuffer);
    ws.onclose = (event) => {
      clearTimeout(attachTimer);
      void this.#closed(event.code, event.reason, opened);
    };
  }

  #message(data: string | ArrayBuffer): void {
    let message;
    try {
      message = decodeServerMessage(typeof data === 'string' ? data : new Uint8Array(data));
    } catch (error) {
      console.error('den terminal: dropped a malformed message', error);
      return;
    }
    switch (message.type) {
      case 'attached':
        this.#attached = true;
        this.#generation++;
        this.#attempt = 0;
        this.#acks.reset();
        this.#sessionId = message.sessionId;
        this.#options.onAttached(message);
        this.#options.onState({ kind: 'attached', sessionId: message.sessionId });
        for (const early of this.#early.splice(0)) this.input(early);
        return;
      case 'output':
        this.#acks.received(message.data.byteLength);
        this.#options.onOutput(message.data);
        return;
      case 'resized':
        // another client is driving the size now; our fit() wins again on our next keystroke or resize
        return;
      case 'exit':
        this.#disposed = true;
        this.#options.onState({ kind: 'ended', code: message.code });
        return;
      case 'error':
        this.#lastError = message.message;
        console.warn(`den terminal: ${message.code}: ${message.message}`);
        return;
    }
  }

  async #closed(code: number, reason: string, opened: boolean): Promise<void> {
    this.#attached = false;
    this.#ws = undefined;
    if (this.#disposed) return;
    const serverSaid = this.#lastError;
    this.#lastError = undefined;
    switch (code) {
      case TERMINAL_CLOSE.sessionEnded:
        this.#disposed = true;
        this.#options.onState({ kind: 'ended', code: 0 });
        return;
      case TERMINAL_CLOSE.unauthorized:
        this.#disposed = true;
        // the server's sentence says which (signed out elsewhere, suspended, token revoked, role changed)
        this.#options.onState({ kind: 'failed', message: serverSaid ?? 'You are signed out or lost access to this workspace. Sign in again and reload.' });
        return;
      case TERMINAL_CLOSE.protocolUnsupported:
        this.#disposed = true;
        this.#options.onState({ kind: 'failed', message: 'den was updated. Reload the page to reconnect.' });
        return;
      case TERMINAL_CLOSE.workspaceNotRunning:
        this.#disposed = true;
        this.#options.onState({ kind: 'failed', message: serverSaid ?? 'The workspace is not running. Start it, then reload this page.' });
        return;
      case TERMINAL_CLOSE.sessionNotFound:
        // the shell is gone (expired or closed elsewhere): start a fresh one rather than retrying forever
        this.#sessionId = undefined;
        break;
    }
    if (!opened && this.#options.whenRefused) {
      this.#options.onState({ kind: 'reconnecting', attempt: this.#attempt + 1, inMs: 0, reason: 'checking access' });
      this.#checking = true;
      const verdict = await this.#options.whenRefused().catch(() => 'backoff' as const);
      this.#checking = false;
      if (this.#disposed) return;
      if (typeof verdict === 'object') {
        this.#disposed = true;
        this.#options.onState({ kind: 'failed', message: verdict.failed });
        return;
      }
      if (verdict === 'retry') this.#attempt = 0;
    }
    const inMs = Math.round(Math.random() * Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.#attempt));
    this.#attempt++;
    this.#options.onState({ kind: 'reconnecting', attempt: this.#attempt, inMs, reason: reason || `connection closed (${code})` });
    this.#retryTimer = setTimeout(() => this.#connect(), inMs);
  }

  readonly #retryNow = (): void => {
    if (this.#disposed || this.#ws || this.#checking || document.visibilityState === 'hidden') return;
    clearTimeout(this.#retryTimer);
    this.#connect();
  };

  #send(message: ClientMessage): void {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(encodeClientMessage(message) as string | ArrayBufferView<ArrayBuffer>);
  }
}
