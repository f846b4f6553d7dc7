import { openTerminal, type TerminalAttached, type TerminalConnection as Attachment } from '../../client/terminal.ts';
import type { DenApiError } from '../../client/errors.ts';
import { TERMINAL_CLOSE } from '../../protocol/terminal.ts';

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
  owner: string;
  workspace: string;
  /** the environment service whose agent the shell runs in; omitted: the workspace's own */
  service?: string;
  sessionId?: string;
  size(): { cols: number; rows: number };
  /** a (re)attach: reset the terminal, then write the snapshot */
  onAttached(info: TerminalAttached): void;
  /** pty output; call `consumed()` from xterm.js's write callback */
  onOutput(data: Uint8Array, consumed: () => void): void;
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
 * A browser terminal that stays connected: client/terminal.ts does each attachment (protocol,
 * acknowledgements, the server's sentences); this reconnects with backoff until the session
 * ends. Every reconnect reattaches to the same session id and gets a fresh snapshot, so nothing
 * printed while disconnected is lost (up to the scrollback).
 */
export class TerminalConnection {
  readonly #options: TerminalConnectionOptions;
  #current: Attachment | undefined;
  #connecting = false;
  #sessionId: string | undefined;
  #attempt = 0;
  #attachments = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #disposed = false;
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
    void this.#connect();
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
    if (this.#current) return this.#current.input(data);
    if (this.#attachments === 0 && this.#early.reduce((sum, early) => sum + early.length, 0) < MAX_EARLY_INPUT) this.#early.push(data);
  }

  resize(cols: number, rows: number): void {
    this.#current?.resize(cols, rows);
  }

  /** Ends the shell, not just this tab's view of it. */
  closeSession(): void {
    this.#current?.closeSession();
  }

  dispose(): void {
    this.#disposed = true;
    clearTimeout(this.#retryTimer);
    removeEventListener('online', this.#retryNow);
    document.removeEventListener('visibilitychange', this.#retryNow);
    this.#current?.detach();
  }

  async #connect(): Promise<void> {
    if (this.#disposed) return;
    this.#connecting = true;
    this.#options.onState({ kind: 'connecting', attempt: this.#attempt });
    const { cols, rows } = this.#options.size();
    let attachment: Attachment;
    try {
      attachment = await openTerminal({
        baseUrl: location.origin,
        owner: this.#options.owner,
        workspace: this.#options.workspace,
        service: this.#options.service,
        sessionId: this.#sessionId,
        cols,
        rows,
        signal: AbortSignal.timeout(ATTACH_TIMEOUT_MS),
        onAttached: (info) => {
          this.#sessionId = info.sessionId;
          this.#options.onAttached(info);
        },
        onOutput: (data, consumed) => this.#options.onOutput(data, consumed),
      });
    } catch (error) {
      this.#connecting = false;
      const failure = error as DenApiError;
      return this.#dropped(failure.closeCode ?? 1006, failure, failure.code === 'SOCKET_REFUSED');
    }
    this.#connecting = false;
    if (this.#disposed) return attachment.detach();
    this.#current = attachment;
    this.#attachments++;
    this.#attempt = 0;
    this.#options.onState({ kind: 'attached', sessionId: attachment.attached.sessionId });
    for (const early of this.#early.splice(0)) attachment.input(early);
    const end = await attachment.ended;
    this.#current = undefined;
    if (this.#disposed || end.reason === 'detached') return;
    if (end.reason === 'exit') {
      this.#disposed = true;
      return this.#options.onState({ kind: 'ended', code: end.code });
    }
    return this.#dropped(end.closeCode, end.error, false);
  }

  /** After a close or a failed attach: stop for good, or reconnect (asking the page first when the server would not open). */
  async #dropped(code: number, error: DenApiError, refused: boolean): Promise<void> {
    if (this.#disposed) return;
    const stop = (state: ConnectionState) => {
      this.#disposed = true;
      this.#options.onState(state);
    };
    switch (code) {
      case TERMINAL_CLOSE.sessionEnded:
        return stop({ kind: 'ended', code: 0 });
      case TERMINAL_CLOSE.unauthorized:
      case TERMINAL_CLOSE.workspaceNotRunning:
        // the server's sentence says which (signed out elsewhere, suspended, role changed, workspace stopped)
        return stop({ kind: 'failed', message: error.message });
      case TERMINAL_CLOSE.protocolUnsupported:
        return stop({ kind: 'failed', message: 'den was updated. Reload the page to reconnect.' });
      case TERMINAL_CLOSE.sessionNotFound:
        // the shell is gone (expired or closed elsewhere): start a fresh one rather than retrying forever
        this.#sessionId = undefined;
        break;
    }
    if (refused && this.#options.whenRefused) {
      this.#options.onState({ kind: 'reconnecting', attempt: this.#attempt + 1, inMs: 0, reason: 'checking access' });
      this.#checking = true;
      const verdict = await this.#options.whenRefused().catch(() => 'backoff' as const);
      this.#checking = false;
      if (this.#disposed) return;
      if (typeof verdict === 'object') return stop({ kind: 'failed', message: verdict.failed });
      if (verdict === 'retry') this.#attempt = 0;
    }
    const inMs = Math.round(Math.random() * Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.#attempt));
    this.#attempt++;
    this.#options.onState({ kind: 'reconnecting', attempt: this.#attempt, inMs, reason: error.message });
    this.#retryTimer = setTimeout(() => void this.#connect(), inMs);
  }

  readonly #retryNow = (): void => {
    if (this.#disposed || this.#current || this.#connecting || this.#checking || document.visibilityState === 'hidden') return;
    clearTimeout(this.#retryTimer);
    void this.#connect();
  };
}
