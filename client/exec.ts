import WebSocket from 'ws';
import { ERROR_CODES } from '../protocol/errors.ts';
import {
  EXEC_STREAM,
  decodeExecData,
  encodeExecData,
  execServerMessageSchema,
  parseExecMessage,
  type ExecClientMessage,
} from '../protocol/exec.ts';
import { DenApiError, errorFromNetwork, errorFromResponse } from './errors.ts';

export interface OpenExecOptions {
  baseUrl: string;
  /** an API token (den login / den tokens create) */
  token: string;
  owner: string;
  workspace: string;
  command: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** allocate a pty of this size in the workspace */
  tty?: { cols: number; rows: number };
  /** piped to the command; EOF is forwarded. Without it the command's stdin is closed at once. */
  stdin?: NodeJS.ReadableStream;
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  /** aborting ends the remote command (the server tells the agent to kill it) */
  signal?: AbortSignal;
}

/** Unsent stdin above which we stop reading local stdin. */
const SOCKET_HIGH_WATER = 256 * 1024;
/** Largest stdin payload per websocket message. */
const MAX_STDIN_MESSAGE = 64 * 1024;

/**
 * Runs a command in a workspace (`den exec`) over the exec websocket (protocol/exec.ts):
 * streams stdout/stderr into the given streams, pipes stdin with EOF, and resolves with the
 * command's exit code. Rejects with a DenApiError whose message is the server's sentence.
 */
export function openExec(options: OpenExecOptions): Promise<number> {
  const url = execUrl(options.baseUrl, options.owner, options.workspace);
  return new Promise<number>((resolve, reject) => {
    let settled = false;
    const settle = (outcome: { code: number } | { error: Error }) => {
      if (settled) return;
      settled = true;
      options.stdin?.removeListener('data', onStdin);
      options.stdin?.removeListener('end', onStdinEnd);
      options.stdin?.pause();
      terminal.off?.('resize', onResize);
      if ('code' in outcome) resolve(outcome.code);
      else reject(outcome.error);
    };
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${options.token}` }, perMessageDeflate: false });
    const sendJson = (message: ExecClientMessage) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(message));

    const onStdin = (chunk: Buffer | string) => {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      // split so no message exceeds the server's websocket limit
      for (let offset = 0; offset < bytes.byteLength; offset += MAX_STDIN_MESSAGE) {
        ws.send(encodeExecData(EXEC_STREAM.stdin, bytes.subarray(offset, offset + MAX_STDIN_MESSAGE)), () => {
          if (ws.bufferedAmount < SOCKET_HIGH_WATER) options.stdin?.resume();
        });
      }
      if (ws.bufferedAmount >= SOCKET_HIGH_WATER) options.stdin?.pause();
    };
    const onStdinEnd = () => sendJson({ type: 'stdin_eof' });
    // a local terminal that changes size resizes the remote pty
    const terminal = options.stdout as NodeJS.WriteStream;
    const onResize = () => sendJson({ type: 'resize', cols: terminal.columns, rows: terminal.rows });
    if (options.tty && terminal.isTTY) terminal.on('resize', onResize);

    options.signal?.addEventListener('abort', () => {
      ws.close(1000, 'canceled');
      settle({ error: new DenApiError('CANCELED', 0, 'The command was canceled.') });
    }, { once: true });

    ws.on('unexpected-response', (_request, response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        settle({ error: errorFromResponse(response.statusCode ?? 0, response.statusMessage ?? '', body, url) });
        ws.terminate();
      });
    });
    ws.on('error', (error) => settle({ error: errorFromNetwork(error, options.baseUrl) }));
    ws.on('open', () => {
      sendJson({ type: 'start', command: options.command, env: options.env, cwd: options.cwd, tty: options.tty });
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        const frame = decodeExecData(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
        if (!frame || frame.stream === EXEC_STREAM.stdin) return;
        const target = frame.stream === EXEC_STREAM.stdout ? options.stdout : options.stderr;
        if (!target.write(frame.payload)) {
          // the local terminal or pipe is behind: stop reading, the server stops the agent, the agent pauses the process
          ws.pause();
          target.once('drain', () => ws.resume());
        }
        return;
      }
      const message = parseExecMessage(execServerMessageSchema, data.toString('utf8'));
      if (!message) return;
      if (message.type === 'started') {
        if (!options.stdin) return sendJson({ type: 'stdin_eof' });
        options.stdin.on('data', onStdin);
        options.stdin.once('end', onStdinEnd);
        options.stdin.resume();
      } else if (message.type === 'exit') {
        settle({ code: message.code });
      } else {
        const { code, message: text, detail, validations } = message.error;
        const status = (ERROR_CODES as Record<string, { status: number }>)[code]?.status ?? 0;
        settle({ error: new DenApiError(code, status, text, { detail, validations }) });
      }
    });
    ws.on('close', (code) => {
      settle({ error: new DenApiError('NETWORK', 0, `The connection to den at ${new URL(options.baseUrl).origin} closed before the command finished (code ${code}). Run it again.`) });
    });
  });
}

export function execUrl(baseUrl: string, owner: string, workspace: string): string {
  const url = new URL(`${baseUrl.replace(/\/+$/, '')}/api/v1/workspaces/${encodeURIComponent(owner)}/${encodeURIComponent(workspace)}/exec`);
  url.protocol = url.protocol === 'https:' ? 'wss:' : url.protocol === 'http:' ? 'ws:' : url.protocol;
  return url.toString();
}
