import { EXEC_STREAM, decodeExecData, encodeExecData } from '../protocol/exec-frames.ts';
import type { ExecClientMessage, ExecServerMessage } from '../protocol/exec.ts';
import { nodeSocket } from './node-socket.ts';
import type { DenSocket, SocketConnector } from './socket.ts';

// Start-up is most of `den exec ws -- true` (target: 150 ms end to end), so the happy path loads
// neither zod nor the error helpers (which load zod): errors are built by `loadErrors` on demand.
type Errors = typeof import('./errors.ts');
const loadErrors = (): Promise<Errors> => import('./errors.ts');

export interface OpenExecOptions {
  baseUrl: string;
  /** an API token (den login / den tokens create) */
  token: string;
  owner: string;
  workspace: string;
  /** run in the agent beside this environment service instead of the workspace's own */
  service?: string;
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
  /** the socket: `ws` by default (client/node-socket.ts), whose pause() stops the remote process while stdout is full */
  connect?: SocketConnector;
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
  const url = execUrl(options.baseUrl, options.owner, options.workspace, options.service);
  return new Promise<number>((resolve, reject) => {
    let settled = false;
    /** The first outcome wins; an error is built (loading ./errors.ts) only when there is one. */
    const settle = (outcome: { code: number } | { error: (errors: Errors) => Error | Promise<Error> }) => {
      if (settled) return;
      settled = true;
      options.stdin?.removeListener('data', onStdin);
      options.stdin?.removeListener('end', onStdinEnd);
      options.stdin?.pause();
      terminal.off?.('resize', onResize);
      if ('code' in outcome) resolve(outcome.code);
      else loadErrors().then(outcome.error).then(reject, reject);
    };
    const sendJson = (message: ExecClientMessage) => ws.isOpen && ws.send(JSON.stringify(message));

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

    const ws: DenSocket = (options.connect ?? nodeSocket)(url, {
      refused: (status, statusText, body) => settle({ error: (errors) => errors.errorFromResponse(status, statusText, body, url) }),
      failed: (error) => settle({ error: (errors) => errors.errorFromNetwork(error, options.baseUrl) }),
      open: () => sendJson({ type: 'start', command: options.command, env: options.env, cwd: options.cwd, tty: options.tty }),
      message: (data) => {
        if (typeof data !== 'string') {
          const frame = decodeExecData(data);
          if (!frame || frame.stream === EXEC_STREAM.stdin) return;
          const target = frame.stream === EXEC_STREAM.stdout ? options.stdout : options.stderr;
          if (!target.write(frame.payload) && ws.pause && ws.resume) {
            // the local terminal or pipe is behind: stop reading, the server stops the agent, the agent pauses the process
            ws.pause();
            target.once('drain', () => ws.resume?.());
          }
          return;
        }
        const message = parseServerMessage(data);
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
          settle({ error: (errors) => errors.errorFromCode(code, text, { detail, validations }) });
        }
      },
      close: (code) => {
        settle({ error: (errors) => new errors.DenApiError('NETWORK', 0, `The connection to den at ${new URL(options.baseUrl).origin} closed before the command finished (code ${code}). Run it again.`) });
      },
    }, { token: options.token });

    options.signal?.addEventListener('abort', () => {
      ws.close(1000, 'canceled');
      settle({ error: (errors) => new errors.DenApiError('CANCELED', 0, 'The command was canceled.') });
    }, { once: true });
  });
}

/**
 * A server control message, checked by hand rather than with protocol/exec.ts's zod schema (the
 * server validated what it sent; loading zod would cost the CLI more than the whole exec round
 * trip). Anything unexpected is ignored, as the schema-based parser did.
 */
function parseServerMessage(text: string): ExecServerMessage | undefined {
  let value: { type?: unknown; code?: unknown; error?: { code?: unknown; message?: unknown } } | null;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (value?.type === 'started') return { type: 'started' };
  if (value?.type === 'exit' && Number.isInteger(value.code) && (value.code as number) >= 0 && (value.code as number) <= 255) {
    return { type: 'exit', code: value.code as number };
  }
  if (value?.type === 'error' && typeof value.error?.code === 'string' && typeof value.error.message === 'string') {
    return value as ExecServerMessage;
  }
  return undefined;
}

/**
 * The username a token belongs to (GET /users/me), for `den exec NAME` with DEN_TOKEN and no
 * saved login. DenClient would validate the answer with zod, whose load costs more than the
 * round trip; only `username` is read here, and errors still come from ./errors.ts.
 */
export async function fetchUsername(baseUrl: string, token: string): Promise<string> {
  const url = `${baseUrl.replace(/\/+$/, '')}/api/v1/users/me`;
  let response: Response;
  let text: string;
  try {
    response = await fetch(url, { headers: { authorization: `Bearer ${token}`, accept: 'application/json' } });
    text = await response.text();
  } catch (error) {
    throw (await loadErrors()).errorFromNetwork(error, baseUrl);
  }
  if (!response.ok) throw (await loadErrors()).errorFromResponse(response.status, response.statusText, text, url);
  let username: unknown;
  try {
    username = (JSON.parse(text) as { username?: unknown } | null)?.username;
  } catch {
    username = undefined;
  }
  if (typeof username !== 'string') {
    const { DenApiError } = await loadErrors();
    throw new DenApiError('BAD_RESPONSE', response.status, `The server at ${new URL(baseUrl).origin} answered /users/me without a username. Check that the URL points at a den server.`);
  }
  return username;
}

export function execUrl(baseUrl: string, owner: string, workspace: string, service?: string): string {
  const url = new URL(`${baseUrl.replace(/\/+$/, '')}/api/v1/workspaces/${encodeURIComponent(owner)}/${encodeURIComponent(workspace)}/exec`);
  if (service !== undefined) url.searchParams.set('service', service);
  url.protocol = url.protocol === 'https:' ? 'wss:' : url.protocol === 'http:' ? 'ws:' : url.protocol;
  return url.toString();
}
