import WebSocket from 'ws';
import type { SocketConnector } from './socket.ts';

/**
 * The `ws` package behind client/socket.ts's interface, for Node callers (the CLI, tests, the
 * benchmark): it reads the body of a refused upgrade, so the user gets the server's sentence
 * ("The workspace is not running...") instead of a bare 1006, and it can pause reading, which
 * `den exec` uses to stop the remote process while a local pipe is full.
 */
export const nodeSocket: SocketConnector = (url, handlers, options) => {
  const ws = new WebSocket(url, {
    headers: options.token ? { authorization: `Bearer ${options.token}` } : {},
    // deflate costs 4-6x throughput on terminal output (docs/terminal.md)
    perMessageDeflate: false,
    maxPayload: options.maxPayload,
  });
  ws.binaryType = 'nodebuffer';
  let refused = false;
  ws.on('unexpected-response', (_request, response) => {
    refused = true;
    let body = '';
    response.setEncoding('utf8');
    response.on('data', (chunk: string) => (body += chunk));
    response.on('end', () => {
      handlers.refused?.(response.statusCode ?? 0, response.statusMessage ?? '', body);
      ws.terminate();
    });
  });
  ws.on('error', (error) => {
    // terminating a refused handshake reports an abort of our own making
    if (!refused) handlers.failed?.(error);
  });
  ws.on('open', () => handlers.open());
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    handlers.message(isBinary ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data.toString('utf8'));
  });
  ws.on('close', (code, reason) => handlers.close(code, reason.toString('utf8')));
  return {
    get isOpen() {
      return ws.readyState === WebSocket.OPEN;
    },
    get bufferedAmount() {
      return ws.bufferedAmount;
    },
    send(data, sent) {
      ws.send(data, sent && (() => sent()));
    },
    close(code, reason) {
      ws.close(code, reason);
    },
    terminate() {
      ws.terminate();
    },
    pause() {
      ws.pause();
    },
    resume() {
      ws.resume();
    },
  };
};
