import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyRequest } from 'fastify';
import { AppError, isAppError } from '../../protocol/errors.ts';
import type { ExecSession } from '../agents/hub-types.ts';
import { downstreamResponseHeaders } from './forward-headers.ts';

/**
 * Forwards one request (HTTP, or a websocket upgrade when `upgrade`) to a `tcp` channel into the
 * workspace, with Node's HTTP client on the channel as its socket (ADR 0019). The reply must be
 * hijacked. Bytes flow both ways under backpressure; an app that sends no response head within
 * `timeoutMs` after the whole request gets 504 APP_TIMEOUT, one that closes first 502.
 */
export function forwardToApp(request: FastifyRequest, client: ServerResponse, tcp: ExecSession, target: { path: string; headers: Record<string, string | string[]>; upgrade: boolean; timeoutMs: number; cors?: { origin: string | undefined } }): void {
  if (target.upgrade) forwardUpgrade(request, tcp, target.path, target.headers, target.timeoutMs);
  else forwardHttp(request, client, tcp, target.path, target.headers, target.timeoutMs, target.cors);
}

/** A short HTML page for a refusal or failure on an app URL (the browser shows it in place of the app). */
export function sendErrorPage(client: ServerResponse, error: AppError): void {
  const body = `<!doctype html><meta charset="utf-8"><title>${error.status} ${error.code}</title><h1>${error.code}</h1><p>${escapeHtml(error.message)}</p>\n`;
  client.writeHead(error.status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  client.end(body);
}

function forwardHttp(request: FastifyRequest, client: ServerResponse, tcp: ExecSession, path: string, headers: Record<string, string | string[]>, timeoutMs: number, cors: { origin: string | undefined } | undefined): void {
  const upstream = httpRequest({ method: request.method, path, headers, createConnection: () => tcp.stdio as Socket });
  // the app's time to answer starts once it has the whole request (an upload may take long)
  let timer: NodeJS.Timeout | undefined;
  let answered = false;
  upstream.once('finish', () => {
    if (!answered) timer = setTimeout(() => fail(new AppError('APP_TIMEOUT', `The app on this port sent no answer in ${Math.round(timeoutMs / 1000)} s. Check that it is running and not stuck, then reload.`)), timeoutMs);
  });
  const fail = (error: unknown) => {
    clearTimeout(timer);
    upstream.destroy();
    tcp.stdio.destroy();
    if (client.headersSent) {
      client.destroy();
      return;
    }
    const appError = isAppError(error) ? error : new AppError('APP_UNREACHABLE', 'The app closed the connection before it answered. Check its logs in the workspace, then reload.');
    sendErrorPage(client, appError);
  };
  upstream.on('response', (response: IncomingMessage) => {
    answered = true;
    clearTimeout(timer);
    client.writeHead(response.statusCode ?? 502, response.statusMessage, downstreamResponseHeaders(response.rawHeaders, cors));
    response.pipe(client);
    response.on('error', () => client.destroy());
    response.on('aborted', () => client.destroy());
  });
  upstream.on('error', fail);
  // the browser went away: the connection in the workspace goes too
  client.on('close', () => {
    clearTimeout(timer);
    if (!client.writableFinished) upstream.destroy();
    tcp.stdio.destroy();
  });
  request.raw.pipe(upstream);
}

function forwardUpgrade(request: FastifyRequest, tcp: ExecSession, path: string, headers: Record<string, string | string[]>, timeoutMs: number): void {
  const client = request.raw.socket;
  const upstream = httpRequest({ method: 'GET', path, headers, createConnection: () => tcp.stdio as Socket });
  const timer = setTimeout(() => upstream.destroy(new AppError('APP_TIMEOUT', 'The app did not answer the websocket upgrade.')), timeoutMs);
  upstream.on('upgrade', (response, socket, head) => {
    clearTimeout(timer);
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
  upstream.on('response', (response) => {
    clearTimeout(timer);
    client.write(rawHead(response));
    response.pipe(client);
  });
  upstream.on('error', (error) => {
    clearTimeout(timer);
    tcp.stdio.destroy();
    const appError = isAppError(error) ? error : new AppError('APP_UNREACHABLE', 'The app closed the connection before it answered the websocket upgrade.');
    if (client.writable) client.end(`HTTP/1.1 ${appError.status} ${appError.code}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n${appError.message}\n`);
  });
  client.on('close', () => {
    clearTimeout(timer);
    upstream.destroy();
    tcp.stdio.destroy();
  });
  upstream.end();
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
