import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import { AppError, isAppError } from '../../protocol/errors.ts';
import { spliceableLength } from './body-splice.ts';
import { downstreamResponseHeaders } from './forward-headers.ts';
import { headGateOf, type AppUpstream } from './upstream-pool.ts';

/**
 * Forwards one request (HTTP, or a websocket upgrade when `upgrade`) to the app over `upstream`
 * (a `tcp` channel into the workspace, as the socket of Node's HTTP client; ADR 0019). The reply
 * must be hijacked. Bytes flow both ways under backpressure; an app that sends no response head
 * within `timeoutMs` after the whole request gets 504 APP_TIMEOUT, one that closes first 502. A
 * request without a body that fails on a reused keep-alive connection before any answer (the
 * app closed it as the request left) is sent once more on a new connection. `abort` ends the
 * request and its connection (access taken away).
 */
export function forwardToApp(request: FastifyRequest, client: ServerResponse, upstream: AppUpstream, target: { path: string; headers: Record<string, string | string[]>; upgrade: boolean; timeoutMs: number; cors?: { origin: string | undefined } }): { abort: () => void } {
  if (target.upgrade) return forwardUpgrade(request, upstream, target.path, target.headers, target.timeoutMs);
  return forwardHttp(request, client, upstream, target.path, target.headers, target.timeoutMs, target.cors);
}

/** A short HTML page for a refusal or failure on an app URL (the browser shows it in place of the app). */
export function sendErrorPage(client: ServerResponse, error: AppError): void {
  const body = `<!doctype html><meta charset="utf-8"><title>${error.status} ${error.code}</title><h1>${error.code}</h1><p>${escapeHtml(error.message)}</p>\n`;
  client.writeHead(error.status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  client.end(body);
}

function forwardHttp(request: FastifyRequest, client: ServerResponse, upstream: AppUpstream, path: string, headers: Record<string, string | string[]>, timeoutMs: number, cors: { origin: string | undefined } | undefined): { abort: () => void } {
  const options = { method: request.method, path, headers };
  // only a request den can send again as it was: no body, and a method that changes nothing
  const retriable = !hasBody(request.raw) && (request.method === 'GET' || request.method === 'HEAD' || request.method === 'OPTIONS');
  // the app's time to answer starts once it has the whole request (an upload may take long)
  let timer: NodeJS.Timeout | undefined;
  let answered = false;
  let retried = false;
  let current: ClientRequest | undefined;
  const fail = (error: unknown) => {
    clearTimeout(timer);
    current?.destroy();
    if (client.headersSent) {
      client.destroy();
      return;
    }
    if (client.destroyed) return;
    const appError = isAppError(error) ? error : new AppError('APP_UNREACHABLE', 'The app closed the connection before it answered. Check its logs in the workspace, then reload.');
    sendErrorPage(client, appError);
  };
  const send = (outgoing: ClientRequest) => {
    current = outgoing;
    outgoing.once('finish', () => {
      if (!answered) timer = setTimeout(() => fail(new AppError('APP_TIMEOUT', `The app on this port sent no answer in ${Math.round(timeoutMs / 1000)} s. Check that it is running and not stuck, then reload.`)), timeoutMs);
    });
    // a pooled connection's gate: what follows the request is a response head (body-splice.ts)
    outgoing.once('socket', (socket) => headGateOf(socket)?.expectHead());
    outgoing.on('response', (response: IncomingMessage) => {
      answered = true;
      clearTimeout(timer);
      client.writeHead(response.statusCode ?? 502, response.statusMessage, downstreamResponseHeaders(response.rawHeaders, cors));
      if (spliceBody(request.method, response, outgoing, client)) return;
      response.pipe(client);
      response.on('error', () => client.destroy());
      response.on('aborted', () => client.destroy());
    });
    outgoing.on('error', (error) => {
      if (outgoing !== current) return;
      if (retriable && !retried && !answered && outgoing.reusedSocket && !client.destroyed) {
        retried = true;
        clearTimeout(timer);
        upstream.fresh(options).then(send, fail);
        return;
      }
      fail(error);
    });
    if (retriable) outgoing.end();
    else request.raw.pipe(outgoing);
  };
  // the browser went away: the connection in the workspace goes too, unless the exchange was complete
  client.on('close', () => {
    clearTimeout(timer);
    if (!client.writableFinished) current?.destroy();
  });
  if (retriable) request.raw.resume();
  send(upstream.request(options));
  return {
    abort: () => {
      clearTimeout(timer);
      current?.destroy();
    },
  };
}

/**
 * Sends a large body straight from the app's connection to the client (body-splice.ts) when the
 * connection's gate can claim it; true when it did. Node's IncomingMessage then never gets the
 * body: the connection is closed once the body went out (Node would wait for it forever), and an
 * app that closes it before the whole body ends the client's response too.
 */
function spliceBody(method: string, response: IncomingMessage, outgoing: ClientRequest, client: ServerResponse): boolean {
  const length = spliceableLength(method, response);
  const gate = length === undefined ? undefined : headGateOf(outgoing.socket);
  let complete = false;
  const claimed = gate?.takeBody(length!, {
    write: (chunk, done) => {
      if (client.destroyed) return done();
      client.write(chunk, () => done());
    },
    end: () => {
      complete = true;
      client.end();
      outgoing.destroy();
    },
  });
  if (!claimed) return false;
  // the connection closing under the body ends the client's response; once the body went out, it is ours to close
  const cut = () => {
    if (!complete) client.destroy();
  };
  response.on('error', cut);
  response.on('aborted', cut);
  return true;
}

function forwardUpgrade(request: FastifyRequest, upstream: AppUpstream, path: string, headers: Record<string, string | string[]>, timeoutMs: number): { abort: () => void } {
  const client = request.raw.socket;
  const outgoing = upstream.request({ method: 'GET', path, headers });
  const timer = setTimeout(() => outgoing.destroy(new AppError('APP_TIMEOUT', 'The app did not answer the websocket upgrade.')), timeoutMs);
  let upgraded: Duplex | undefined;
  outgoing.on('upgrade', (response, socket, head) => {
    clearTimeout(timer);
    upgraded = socket;
    client.write(rawHead(response));
    if (head.length > 0) client.write(head);
    const clientHead = headOf(request.raw);
    if (clientHead.length > 0) socket.write(clientHead);
    socket.pipe(client);
    client.pipe(socket);
    socket.on('error', () => client.destroy());
    client.on('error', () => socket.destroy());
    socket.on('close', () => client.destroy());
    client.on('close', () => socket.destroy());
  });
  // the app answered without switching protocols (a 404, a 403 for a foreign Origin): pass that on
  outgoing.on('response', (response) => {
    clearTimeout(timer);
    client.write(rawHead(response));
    response.pipe(client);
  });
  outgoing.on('error', (error) => {
    clearTimeout(timer);
    const appError = isAppError(error) ? error : new AppError('APP_UNREACHABLE', 'The app closed the connection before it answered the websocket upgrade.');
    if (client.writable) client.end(`HTTP/1.1 ${appError.status} ${appError.code}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n${appError.message}\n`);
  });
  const abort = () => {
    clearTimeout(timer);
    outgoing.destroy();
    upgraded?.destroy();
  };
  client.on('close', abort);
  outgoing.end();
  return { abort };
}

/** A body follows the head (RFC 9112 6.3: Transfer-Encoding, or a Content-Length other than 0). */
function hasBody(raw: IncomingMessage): boolean {
  const length = raw.headers['content-length'];
  return raw.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

function rawHead(response: IncomingMessage): string {
  const lines = [`HTTP/1.1 ${response.statusCode} ${response.statusMessage ?? ''}`];
  const keepFraming = response.statusCode === 101;
  const headers = keepFraming ? [...response.rawHeaders] : downstreamResponseHeaders(response.rawHeaders);
  for (let i = 0; i < headers.length; i += 2) lines.push(`${headers[i]}: ${headers[i + 1]}`);
  if (!keepFraming) lines.push('Connection: close');
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** Bytes the client sent after its upgrade request head (@fastify/websocket keeps them on the request). */
function headOf(raw: IncomingMessage): Buffer {
  const key = Object.getOwnPropertySymbols(raw).find((symbol) => symbol.description === 'ws-head');
  const head = key ? (raw as unknown as Record<symbol, unknown>)[key] : undefined;
  return Buffer.isBuffer(head) ? head : Buffer.alloc(0);
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
