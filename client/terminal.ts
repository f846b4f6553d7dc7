import WebSocket from 'ws';
import { ERROR_CODES } from '../protocol/errors.ts';
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
import { DenApiError, errorFromNetwork, errorFromResponse } from './errors.ts';

/**
 * The Node client of a workspace terminal (protocol/terminal.ts over
 * `GET /api/v1/workspaces/:owner/:name/terminal`), used by `den terminal` and the benchmark.
 *
 * The caller renders the output (a local terminal, a headless xterm.js) and says when each chunk
 * is consumed; the client acknowledges consumed bytes as protocol/terminal-acks.ts says (in
 * ACK_EVERY_BYTES steps, the remainder once output is quiet), which is what lets the agent pause
 * the shell instead of buffering a flood for a slow renderer.
 */
export interface OpenTerminalOptions {
  baseUrl: string;
  /** an API token (den login / den tokens create) */
  token: string;
  owner: string;
  workspace: string;
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
  const ws = new WebSocket(url, {
    headers: { authorization: `Bearer ${options.token}` },
    // deflate costs 4-6x throughput on terminal output (docs/terminal.md)
    perMessageDeflate: false,
    maxPayload: MAX_SERVER_TEXT_BYTES + 1024,
  });
  ws.binaryType = 'nodebuffer';
  const acks = new OutputAcks((bytes) => send({ type: 'ack', bytes }));
  const send = (message: ClientMessage) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(encodeClientMessage(message));
  };

  let attached: TerminalAttached | undefined;
  let lastError: DenApiError | undefined;
  let exit: { code: number; signal?: number } | undefined;
  let detached = false;
  let resolveEnded!: (end: TerminalEnd) => void;
  const ended = new Promise<TerminalEnd>((resolve) => (resolveEnded = resolve));

  return new Promise<TerminalConnection>((resolve, reject) => {
    const fail = (error: DenApiError) => {
      if (attached) return;
      reject(error);
      ws.terminate();
    };
    ws.on('unexpected-response', (_request, response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => fail(errorFromResponse(response.statusCode ?? 0, response.statusMessage ?? '', body, url)));
    });
    ws.on('error', (error) => {
      if (!attached) fail(errorFromNetwork(error, options.baseUrl));
    });
    ws.on('open', () => {
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
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      let message;
      try {
        message = decodeServerMessage(isBinary ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data.toString('utf8'));
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
    });
    ws.on('close', (code) => {
      acks.stop();
      if (!attached) {
        return fail(lastError ?? new DenApiError('NETWORK', 0, `The connection to den at ${origin} closed before the terminal attached (code ${code}). Try again.`));
      }
      if (exit) return resolveEnded({ reason: 'exit', ...exit });
      if (detached) return resolveEnded({ reason: 'detached' });
      const error = lastError ?? new DenApiError('NETWORK', 0, `The connection to den at ${origin} dropped (code ${code}); the terminal session keeps running.`);
      resolveEnded({ reason: 'error', error, closeCode: code, reconnect: !FINAL.has(code) });
    });

    function handleControl(message: ServerControl) {
      switch (message.type) {
        case 'attached': {
          attached = { sessionId: message.sessionId, cols: message.cols, rows: message.rows, snapshot: message.snapshot, title: message.title };
          options.onAttached?.(attached);
          return resolve(connection(attached));
        }
        case 'resized':
          return options.onResized?.(message.cols, message.rows);
        case 'exit':
          exit = { code: message.code, signal: message.signal };
          return;
        case 'error': {
          const status = (ERROR_CODES as Record<string, { status: number } | undefined>)[message.code]?.status ?? 0;
          lastError = new DenApiError(message.code, status, message.message);
          if (!attached) fail(lastError);
          return;
        }
      }
    }
  });

  function connection(info: TerminalAttached): TerminalConnection {
    return {
      attached: info,
      ended,
      input(data) {
        const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
        for (let offset = 0; offset < bytes.byteLength; offset += MAX_DATA_PAYLOAD) {
          if (ws.readyState === WebSocket.OPEN) ws.send(encodeClientMessage({ type: 'input', data: bytes.subarray(offset, offset + MAX_DATA_PAYLOAD) }));
        }
      },
      resize(cols, rows) {
        if (ws.readyState === WebSocket.OPEN) ws.send(encodeClientMessage({ type: 'resize', cols, rows }));
      },
      detach() {
        detached = true;
        ws.close(1000, 'detached');
      },
      closeSession() {
        if (ws.readyState === WebSocket.OPEN) ws.send(encodeClientMessage({ type: 'close' }));
      },
    };
  }
}

/** The websocket URL of a workspace's terminal. */
export function terminalUrl(baseUrl: string, owner: string, workspace: string, service?: string): string {
  const url = new URL(`${baseUrl.replace(/\/+$/, '')}/api/v1/workspaces/${encodeURIComponent(owner)}/${encodeURIComponent(workspace)}/terminal`);
  if (service !== undefined) url.searchParams.set('service', service);
  url.protocol = url.protocol === 'https:' ? 'wss:' : url.protocol === 'http:' ? 'ws:' : url.protocol;
  return url.toString();
}
