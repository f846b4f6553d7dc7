/**
 * The socket under den's websocket clients (terminal, exec), injectable so the same protocol code
 * runs in browsers and in Node. `webSocket` (the default) is the WHATWG WebSocket every browser
 * and Node 24 have; client/node-socket.ts wraps the `ws` package for the CLI and tests, which
 * need what the standard socket cannot do: read the HTTP body of a refused upgrade (the server's
 * error sentence) and pause reading for flow control. Nothing here imports Node modules, so the
 * browser bundle never pulls `ws` in.
 */
export interface DenSocket {
  readonly isOpen: boolean;
  /** bytes queued by `send` and not yet written to the network */
  readonly bufferedAmount: number;
  /** `sent` (when the socket can tell) is called once the data left the process */
  send(data: string | Uint8Array, sent?: () => void): void;
  close(code?: number, reason?: string): void;
  /** drops the connection without a closing handshake */
  terminate(): void;
  /** stops and restarts reading messages; undefined where the socket cannot (browsers) */
  pause?(): void;
  resume?(): void;
}

export interface DenSocketHandlers {
  open(): void;
  message(data: string | Uint8Array): void;
  /**
   * The server answered the upgrade with an HTTP error, body included. Only sockets that can read
   * it call this (a browser's cannot: it sees a close with 1006 before `open`).
   */
  refused?(status: number, statusText: string, body: string): void;
  /** a network failure before or after opening (refused connection, reset) */
  failed?(error: unknown): void;
  /** always last, also after `refused` or `failed` */
  close(code: number, reason: string): void;
}

export interface DenSocketOptions {
  /** an API token, sent as a bearer header; browsers authenticate with the session cookie instead */
  token?: string;
  /** largest message accepted from the server, where the socket can limit it */
  maxPayload?: number;
}

export type SocketConnector = (url: string, handlers: DenSocketHandlers, options: DenSocketOptions) => DenSocket;

/** The platform's WebSocket (browsers; Node 24 through undici, which also takes headers). */
export const webSocket: SocketConnector = (url, handlers, options) => {
  const init = options.token ? ({ headers: { authorization: `Bearer ${options.token}` } } as unknown as string[]) : undefined;
  const ws = new WebSocket(url, init);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => handlers.open();
  ws.onmessage = (event: MessageEvent<string | ArrayBuffer>) => {
    handlers.message(typeof event.data === 'string' ? event.data : new Uint8Array(event.data));
  };
  ws.onclose = (event) => handlers.close(event.code, event.reason);
  return {
    get isOpen() {
      return ws.readyState === WebSocket.OPEN;
    },
    get bufferedAmount() {
      return ws.bufferedAmount;
    },
    send(data) {
      ws.send(data as string | Uint8Array<ArrayBuffer>);
    },
    close(code, reason) {
      ws.close(code, reason);
    },
    terminate() {
      ws.close();
    },
  };
};
