import WebSocket from 'ws';
import { noteRelayed } from '../protocol/heap.ts';

type Errors = typeof import('./errors.ts');
const loadErrors = (): Promise<Errors> => import('./errors.ts');

/** Unsent bytes above which we stop reading the local side. */
const SOCKET_HIGH_WATER = 256 * 1024;
/** Largest payload per websocket message (the server's websocket limit is 1 MiB). */
const MAX_MESSAGE = 64 * 1024;

export interface TunnelOptions {
  baseUrl: string;
  token: string;
  /** the websocket route, e.g. /api/v1/workspaces/alice/dev/ssh */
  path: string;
  query?: Record<string, string>;
  input: NodeJS.ReadableStream;
  output: NodeJS.WritableStream;
}

/**
 * Carries raw bytes between local streams and one of den's byte websockets (the SSH tunnel of
 * `den ssh --stdio`, a connection of `den port-forward`): binary messages both ways with
 * backpressure on each side. Resolves when either side ends; rejects with a DenApiError carrying
 * den's sentence when the server refuses the upgrade or ends the tunnel with an error envelope.
 */
export function runTunnel(options: TunnelOptions): Promise<void> {
  const url = new URL(`${options.baseUrl.replace(/\/+$/, '')}${options.path}`);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  for (const [key, value] of Object.entries(options.query ?? {})) url.searchParams.set(key, value);
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const settle = (outcome: { ok: true } | { error: (errors: Errors) => Error | Promise<Error> }) => {
      if (settled) return;
      settled = true;
      options.input.removeListener('data', onInput);
      options.input.removeListener('end', onInputEnd);
      options.input.pause();
      if ('ok' in outcome) resolve();
      else loadErrors().then(outcome.error).then(reject, reject);
    };
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${options.token}` }, perMessageDeflate: false });
    const onInput = (chunk: Buffer | string) => {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      noteRelayed(bytes.byteLength);
      for (let offset = 0; offset < bytes.byteLength; offset += MAX_MESSAGE) {
        ws.send(bytes.subarray(offset, offset + MAX_MESSAGE), { binary: true }, () => {
          if (ws.bufferedAmount < SOCKET_HIGH_WATER) options.input.resume();
        });
      }
      if (ws.bufferedAmount >= SOCKET_HIGH_WATER) options.input.pause();
    };
    // a websocket has no half-close: the end of our input ends the tunnel once it is sent
    const onInputEnd = () => ws.close(1000, 'done');

    ws.on('unexpected-response', (_request, response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        settle({ error: (errors) => errors.errorFromResponse(response.statusCode ?? 0, response.statusMessage ?? '', body, url.toString()) });
        ws.terminate();
      });
    });
    ws.on('error', (error) => settle({ error: (errors) => errors.errorFromNetwork(error, options.baseUrl) }));
    ws.on('open', () => {
      options.input.on('data', onInput);
      options.input.once('end', onInputEnd);
      options.input.resume();
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      noteRelayed(data.byteLength);
      if (!isBinary) {
        // den's reason for ending the tunnel: the error envelope
        const envelope = parseEnvelope(data.toString('utf8'));
        if (envelope) settle({ error: (errors) => new errors.DenApiError(envelope.code, 0, envelope.message) });
        return;
      }
      if (!options.output.write(data)) {
        ws.pause();
        options.output.once('drain', () => ws.resume());
      }
    });
    ws.on('close', () => settle({ ok: true }));
  });
}

function parseEnvelope(text: string): { code: string; message: string } | undefined {
  try {
    const value = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } } | null;
    if (typeof value?.error?.code === 'string' && typeof value.error.message === 'string') return { code: value.error.code, message: value.error.message };
  } catch {
    // not an envelope: ignored
  }
  return undefined;
}
