import { OutputAcks } from '../protocol/terminal-acks.ts';
import {
  MAX_DATA_PAYLOAD,
  MAX_SERVER_TEXT_BYTES,
  TERMINAL_CLOSE,
  TERMINAL_PROTOCOL,
  TerminalFrameError,
  decodeServerMessage,
  encodeClientMessage,
  type ClientMessage,
  type ServerControl,
} from '../protocol/terminal.ts';
import { DenApiError, errorFromCode, errorFromNetwork, errorFromResponse } from './errors.ts';
import { webSocket, type SocketConnector } from './socket.ts';

/**
 * The client of a workspace terminal (protocol/terminal.ts over
 * `GET /api/v1/workspaces/:owner/:name/terminal`), used by `den terminal`, the tests and the
 * browser pages (web/src/connection.ts reconnects with it). One attachment per call.
 *
 * The caller renders the output (a local terminal, a headless xterm.js) and says when each chunk
 * is consumed; the client acknowledges consumed bytes as protocol/terminal-acks.ts says (in
 * ACK_EVERY_BYTES steps, the remainder once output is quiet), which is what lets the agent pause
 * the shell instead of buffering a flood for a slow renderer.
 */
export interface OpenTerminalOptions {
  baseUrl: string;
  /** an API token (den login / den tokens create); omitted in a browser, which sends the session cookie */
  token?: string;
  owner: string;
  workspace: string;
  /**
   * The socket to use: the platform's WebSocket by default; Node callers pass
   * client/node-socket.ts's `nodeSocket` to get the server's sentence when it refuses the upgrade.
   */
  connect?: SocketConnector;
  /** aborting before `attached` rejects with CANCELED and drops the socket (an attach that hangs) */
  signal?: AbortSignal;
  /** the environment service whose agent the session is on; omitted: the workspace's own */
  service?: string;
  /** reattach to this session; omitted: start a new one */
  sessionId?: string;
  /** for a new session: the argv to run instead of the workspace's login shell */
  command?: string[];
  /** for a new session: extra environment variables */
  env?: Record<string, string>;
  cols: number;
  rows: number;
  /**
   * Receives each OUTPUT payload; call `consumed()` once it has been written/parsed (for stdout:
   * in the write callback). Output may arrive before `openTerminal` resolves, right after `attached`.
   */
  onOutput(data: Uint8Array, consumed: () => void): void;
  /** called with `attached` before any output is delivered (write the snapshot here) */
  onAttached?(attached: TerminalAttached): void;
  /** the pty was resized (by this or another client) */
  onResized?(cols: number, rows: number): void;
}

export interface TerminalAttached {
  sessionId: string;
  cols: number;
  rows: number;
  /** serialized screen, scrollback and modes: write it into a reset terminal */
  snapshot: string;
  title?: string;
}

/** How an attachment ended. */
export type TerminalEnd =
  /** the shell exited (or the session was closed): do not reconnect */
  | { reason: 'exit'; code: number; signal?: number }
  /** we detached; the session lives on */
  | { reason: 'detached' }
  /** the server dropped us; `reconnect` says whether reattaching by id makes sense */
  | { reason: 'error'; error: DenApiError; closeCode: number; reconnect: boolean };

export interface TerminalConnection {
  readonly attached: TerminalAttached;
  /** resolves once the socket is closed, with why */
  readonly ended: Promise<TerminalEnd>;
  /** bytes or text for the pty; split into frames the server accepts */
  input(data: string | Uint8Array): void;
  resize(cols: number, rows: number): void;
  /** closes the socket only: the session keeps running for a later reattach */
  detach(): void;
  /** ends the session (the shell is hung up); `ended` then resolves with its exit */
  closeSession(): void;
}

/**
 * Close codes after which reattaching to the same session id is pointless: the session ended, the
 * server refused us or our messages, the workspace stopped. Anything else (4009 going away, 4008
 * too slow, a server shutting down with 1001/1005/1006) is worth a reattach by id.
 */
const FINAL = new Set<number>([
  TERMINAL_CLOSE.sessionEnded,
  TERMINAL_CLOSE.unauthorized,
  TERMINAL_CLOSE.protocolUnsupported,
  TERMINAL_CLOSE.protocolError,
  TERMINAL_CLOSE.sessionNotFound,
  TERMINAL_CLOSE.workspaceNotRunning,
]);

/**
 * Opens the terminal socket and attaches; resolves once the server answered `attached`.
 * Rejects with a DenApiError carrying the server's sentence (HTTP refusal of the upgrade, an
 * `error` message, or a close before attaching).
 */
export function openTerminal(options: OpenTerminalOptions): Promise<TerminalConnection> {
  const url = terminalUrl(options.baseUrl, options.owner, options.workspace, options.service);
  const origin = new URL(options.baseUrl).origin;
  const acks = new OutputAcks((bytes) => send({ type: 'ack', bytes }));
  const send = (message: ClientMessage) => {
    if (ws.isOpen) ws.send(encodeClientMessage(message));
  };

  let attached: TerminalAttached | undefined;
  let lastError: DenApiError | undefined;
  let exit: { code: number; signal?: number } | undefined;
  let detached = false;
  let opened = false;
  let resolveEnded!: (end: TerminalEnd) => void;
  const ended = new Promise<TerminalEnd>((resolve) => (resolveEnded = resolve));
  let resolveOpen!: (connection: TerminalConnection) => void;
  let rejectOpen!: (error: DenApiError) => void;
  const result = new Promise<TerminalConnection>((resolve, reject) => {
    resolveOpen = resolve;
    rejectOpen = reject;
  });
  const fail = (error: DenApiError) => {
    if (attached) return;
    rejectOpen(error);
    ws.terminate();
  };

  const ws = (options.connect ?? webSocket)(url, {
    refused: (status, statusText, body) => fail(errorFromResponse(status, statusText, body, url)),
    failed: (error) => {
      if (!attached) fail(errorFromNetwork(error, options.baseUrl));
    },
    open: () => {
      opened = true;
      const fresh = options.sessionId === undefined;
      send({
        type: 'attach',
        protocol: { ...TERMINAL_PROTOCOL },
        sessionId: options.sessionId,
        cols: options.cols,
        rows: options.rows,
        command: fresh ? options.command : undefined,
        env: fresh ? options.env : undefined,
      });
    },
    message: (data) => {
      let message;
      try {
        message = decodeServerMessage(data);
      } catch (error) {
        if (!(error instanceof TerminalFrameError)) throw error;
        lastError = new DenApiError('BAD_RESPONSE', 0, `The den server at ${origin} sent a terminal message this client does not understand (${error.message}) Update den and try again.`);
        ws.close(TERMINAL_CLOSE.protocolError);
        return;
      }
      if (message.type === 'output') {
        acks.received(message.data.byteLength);
        options.onOutput(message.data, () => acks.consumed(message.data.byteLength));
      } else {
        handleControl(message);
      }
    },
    close: (code) => {
      acks.stop();
      if (!attached) {
        // the server's `error` came first; the close code says what it means for a retry
        if (lastError) return fail(new DenApiError(lastError.code, lastError.status, lastError.message, { detail: lastError.detail, closeCode: code }));
        // a browser's socket cannot read why an upgrade was refused: it only sees a close before `open`
        if (!opened) return fail(new DenApiError('SOCKET_REFUSED', 0, `The den server at ${origin} did not open the terminal (code ${code}): it is down, you are signed out, or the workspace is gone.`, { closeCode: code }));
        return fail(new DenApiError('NETWORK', 0, `The connection to den at ${origin} closed before the terminal attached (code ${code}). Try again.`, { closeCode: code }));
      }
      if (exit) return resolveEnded({ reason: 'exit', ...exit });
      if (detached) return resolveEnded({ reason: 'detached' });
      const error = lastError ?? new DenApiError('NETWORK', 0, `The connection to den at ${origin} dropped (code ${code}); the terminal session keeps running.`);
      resolveEnded({ reason: 'error', error, closeCode: code, reconnect: !FINAL.has(code) });
    },
  }, { token: options.token, maxPayload: MAX_SERVER_TEXT_BYTES + 1024 });
  options.signal?.addEventListener('abort', () => fail(new DenApiError('CANCELED', 0, `The terminal at ${origin} did not attach in time.`)), { once: true });
  return result;

  function handleControl(message: ServerControl) {
    switch (message.type) {
      case 'attached': {
        attached = { sessionId: message.sessionId, cols: message.cols, rows: message.rows, snapshot: message.snapshot, title: message.title };
        options.onAttached?.(attached);
        return resolveOpen(connection(attached));
      }
      case 'resized':
        return options.onResized?.(message.cols, message.rows);
      case 'exit':
        exit = { code: message.code, signal: message.signal };
        return;
      case 'error':
        // the server closes right after; before `attached`, the rejection waits for the close code
        lastError = errorFromCode(message.code, message.message);
        return;
    }
  }

  function connection(info: TerminalAttached): TerminalConnection {
    return {
      attached: info,
      ended,
      input(data) {
        const bytes = typeof data === 'string' ? encoder.encode(data) : data;
        for (let offset = 0; offset < bytes.byteLength; offset += MAX_DATA_PAYLOAD) {
          send({ type: 'input', data: bytes.subarray(offset, offset + MAX_DATA_PAYLOAD) });
        }
      },
      resize(cols, rows) {
        send({ type: 'resize', cols, rows });
      },
      detach() {
        detached = true;
        ws.close(1000, 'detached');
      },
      closeSession() {
        send({ type: 'close' });
      },
    };
  }
}

const encoder = new TextEncoder();

/** The websocket URL of a workspace's terminal. */
export function terminalUrl(baseUrl: string, owner: string, workspace: string, service?: string): string {
  const url = new URL(`${baseUrl.replace(/\/+$/, '')}/api/v1/workspaces/${encodeURIComponent(owner)}/${encodeURIComponent(workspace)}/terminal`);
  if (service !== undefined) url.searchParams.set('service', service);
  url.protocol = url.protocol === 'https:' ? 'wss:' : url.protocol === 'http:' ? 'ws:' : url.protocol;
  return url.toString();
}
