import type { WebSocket } from 'ws';

/** What the guard needs of a logger (pino's and Fastify's fit). */
interface ErrorLog {
  error(object: object, message: string): void;
}

/** The websocket close code for "the server hit an unexpected condition" (RFC 6455). */
const INTERNAL_ERROR_CLOSE = 1011;

export interface SocketGuard {
  /** `handler` with every exception it throws turned into `trip` */
  wrap<A extends unknown[]>(handler: (...args: A) => void): (...args: A) => void;
  /** logs the error with its stack (once per socket) and closes the socket 1011 INTERNAL */
  trip(error: unknown): void;
}

/**
 * Guards the handlers of one websocket. An exception thrown in a 'message' listener or in a
 * promise callback is no longer the socket's business alone: it escapes to the process and stops
 * den for everyone. Every socket handler of the server is wrapped with this, so an unexpected
 * error (a bug, by definition: bad input is refused with a coded error before it gets here) ends
 * only its own socket, and the stack is in the log.
 */
export function guardSocket(socket: WebSocket, log: ErrorLog, what: string): SocketGuard {
  let tripped = false;
  const trip = (error: unknown) => {
    if (tripped) return;
    tripped = true;
    log.error({ err: error }, `${what}: unexpected error; closing this socket (1011 INTERNAL)`);
    try {
      if (socket.readyState === socket.OPEN || socket.readyState === socket.CONNECTING) socket.close(INTERNAL_ERROR_CLOSE, 'INTERNAL');
    } catch (closeError) {
      log.error({ err: closeError }, `${what}: the socket could not be closed; terminating it`);
      socket.terminate();
    }
  };
  return {
    trip,
    wrap: (handler) => (...args) => {
      try {
        handler(...args);
      } catch (error) {
        trip(error);
      }
    },
  };
}

/**
 * Closes a websocket that may be paused for backpressure. A paused socket never reads the peer's
 * answering close frame, so without the resume the close handshake waits for ws's 30 s timeout and
 * the connection is held that long.
 */
export function closeSocket(socket: WebSocket, code: number, reason: string): void {
  socket.close(code, closeReason(reason));
  socket.resume();
}

/** A close reason holds at most 123 bytes of UTF-8 (ws throws beyond); a longer one, such as an agent's error code, is cut at a character. */
const MAX_CLOSE_REASON_BYTES = 123;

function closeReason(reason: string): string {
  if (Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES) return reason;
  let out = '';
  let bytes = 0;
  for (const character of reason) {
    bytes += Buffer.byteLength(character);
    if (bytes > MAX_CLOSE_REASON_BYTES) break;
    out += character;
  }
  return out;
}
