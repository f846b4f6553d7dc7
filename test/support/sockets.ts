import WebSocket from 'ws';

/** The server answers a frame or closes a socket well within this on a loaded machine. */
export const SOCKET_TIMEOUT_MS = 10_000;

/** A user websocket (terminal, exec) that records what the server sent and how it closed. */
export interface RecordedSocket {
  socket: WebSocket;
  texts: string[];
  binaries: Buffer[];
  /** the close code and reason, once the server closed the socket */
  closed: Promise<{ code: number; reason: string }>;
  /** resolves once a text message satisfies `match` */
  text(match: (text: string) => boolean, timeoutMs?: number): Promise<string>;
}

/** Opens a websocket on `path` of the server with an API token and resolves once it is open. */
export async function openUserSocket(baseUrl: string, path: string, token: string): Promise<RecordedSocket> {
  const socket = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}${path}`, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
  const texts: string[] = [];
  const binaries: Buffer[] = [];
  const wakes = new Set<() => void>();
  socket.on('message', (data: Buffer, isBinary: boolean) => {
    if (isBinary) binaries.push(data);
    else texts.push(data.toString('utf8'));
    for (const wake of [...wakes]) wake();
  });
  socket.on('error', () => {});
  const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.once('close', (code, reason) => {
    resolve({ code, reason: reason.toString() });
    for (const wake of [...wakes]) wake();
  }));
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('unexpected-response', (_request, response) => reject(new Error(`${path} answered ${response.statusCode} instead of upgrading.`)));
  });
  return {
    socket,
    texts,
    binaries,
    closed,
    text(match, timeoutMs = SOCKET_TIMEOUT_MS) {
      return waitFor(wakes, () => texts.find(match), {
        timeoutMs,
        gone: () => socket.readyState === WebSocket.CLOSED,
        failure: (why) => new Error(`${path}: ${why === 'gone' ? 'closed without the message' : `no matching message within ${timeoutMs} ms`}; got ${JSON.stringify(texts)}`),
      });
    },
  };
}

/**
 * Resolves with what `find` finds, checked now and whenever something calls the wakes (a message
 * arrived); rejects once `gone` says nothing more will arrive, or after the timeout.
 */
export function waitFor<T>(
  wakes: Set<() => void>,
  find: () => T | undefined,
  options: { timeoutMs: number; gone?: () => boolean; failure: (why: 'gone' | 'timeout') => Error },
): Promise<T> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const found = find();
      if (found !== undefined) return finish(() => resolve(found));
      if (options.gone?.()) finish(() => reject(options.failure('gone')));
    };
    const timer = setTimeout(() => finish(() => reject(options.failure('timeout'))), options.timeoutMs);
    const finish = (settle: () => void) => {
      clearTimeout(timer);
      wakes.delete(check);
      settle();
    };
    wakes.add(check);
    check();
  });
}

/** Resolves with the close, or rejects when the server did not close the socket in time. */
export function closedWithin<T>(closed: Promise<T>, timeoutMs = SOCKET_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    closed.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`The server did not close the socket within ${timeoutMs} ms.`)), timeoutMs))),
  ]);
}
