import { z } from 'zod';
import { parseJsonFrame } from './json-frame.ts';

/**
 * The browser terminal protocol: one websocket per attached terminal, between a client (the
 * dashboard's xterm.js, `den terminal`, the benchmark) and whatever serves the session (the den
 * server relaying to the agent, or bench/terminal-reference.ts).
 *
 * Version history (minor = additive, major = breaking; a server refuses majors it does not know
 * with TERMINAL_PROTOCOL_UNSUPPORTED):
 *  - 1.0  attach/attached, input, output, ack, resize, close, error, exit.
 *  - 1.1  `attach` may carry `command` (argv) and `env` for a new session; close code 4010
 *         (workspace not running); the sessions API schemas (`terminalSessionListSchema`).
 *
 * Framing. Every websocket message is one message of this protocol.
 *  - Binary messages carry bytes: 1 type byte, then the payload.
 *      0x00 INPUT   client -> server, bytes for the pty (keystrokes, paste), <= MAX_DATA_PAYLOAD
 *      0x01 OUTPUT  server -> client, bytes from the pty, <= MAX_DATA_PAYLOAD
 *  - Text messages are JSON control messages, a discriminated union on `type`
 *    (`clientMessageSchema`, `serverMessageSchema`). Client text messages are at most
 *    MAX_CLIENT_TEXT_BYTES; server text messages at most MAX_SERVER_TEXT_BYTES (only `attached`,
 *    which carries the screen snapshot, gets near that).
 *
 * Session. The first client message is `attach`. Without `sessionId` a new session starts;
 * with one, the client joins that session (TERMINAL_SESSION_NOT_FOUND if it is gone). The
 * server answers `attached` with a snapshot (serialized screen, scrollback and modes) that the
 * client writes into a reset terminal; OUTPUT frames then continue exactly where the snapshot
 * ends (no gap, no duplicate). Closing the websocket only detaches; `close` ends the session.
 *
 * Over the agent link (server <-> agent), a `terminal` channel carries the same messages as
 * records in the channel's byte stream (DATA frames may split or join them): u8 kind (0 text,
 * 1 binary) | u32 length, big endian | the websocket message's bytes. See `encodeRecord`.
 *
 * Flow control. The client acknowledges OUTPUT payload bytes once its parser has consumed them
 * (xterm.js write callbacks), in `ack {bytes}` messages of at least ACK_EVERY_BYTES (or whatever
 * is outstanding, a moment after output went quiet: protocol/terminal-acks.ts). The server stops
 * reading the pty while any attached client has more than its high watermark unacknowledged, so
 * a slow parser slows the producer instead of growing buffers; a client that stops acknowledging
 * for long is detached with TERMINAL_CLIENT_TOO_SLOW and may reattach (it gets a fresh snapshot).
 */
export const TERMINAL_PROTOCOL = { major: 1, minor: 1 } as const;

/** Largest INPUT/OUTPUT payload in one binary message; bigger pastes are split by the client. */
export const MAX_DATA_PAYLOAD = 64 * 1024;
/** Largest client text message (an `input` string is bounded by this too). */
export const MAX_CLIENT_TEXT_BYTES = 64 * 1024;
/** Largest server text message: `attached` with a snapshot of up to MAX_SCROLLBACK lines at most fits after trimming. */
export const MAX_SERVER_TEXT_BYTES = 8 * 1024 * 1024;
/** Clients acknowledge in steps of about this many bytes (VS Code uses 5,000 chars; a larger step costs nothing at these watermarks). */
export const ACK_EVERY_BYTES = 16 * 1024;
/** Scrollback bounds a session accepts. */
export const MAX_SCROLLBACK = 10_000;
export const DEFAULT_SCROLLBACK = 1_000;

/** Size bounds: resize requests outside are clamped, never refused (a 0x0 window or a bogus 100000x100000 must not crash anything). */
export const TERMINAL_SIZE = { minCols: 2, maxCols: 1000, minRows: 1, maxRows: 500 } as const;

export const BINARY_TYPE = { input: 0x00, output: 0x01 } as const;

/** Websocket close codes of a terminal socket (4000-4999 are application codes). */
export const TERMINAL_CLOSE = {
  /** the session ended (shell exited or `close`); an `exit` message preceded it: do not reconnect */
  sessionEnded: 4000,
  /** not signed in or no access to the workspace: do not reconnect */
  unauthorized: 4001,
  /** the protocol major is unknown to the server: do not reconnect */
  protocolUnsupported: 4002,
  /** a malformed or oversized message */
  protocolError: 4004,
  /** the session id is unknown: start a new session instead of reconnecting to it */
  sessionNotFound: 4404,
  /** the client stopped acknowledging output: reconnecting is fine (fresh snapshot) */
  clientTooSlow: 4008,
  /** the server or the agent link is going away, or the agent is not connected yet: reconnect with backoff */
  goingAway: 4009,
  /** the workspace is not running: do not reconnect until it is started */
  workspaceNotRunning: 4010,
} as const;

export const clampCols = (cols: number): number => clamp(cols, TERMINAL_SIZE.minCols, TERMINAL_SIZE.maxCols);
export const clampRows = (rows: number): number => clamp(rows, TERMINAL_SIZE.minRows, TERMINAL_SIZE.maxRows);

// Any finite number is accepted and clamped: a client that sends 0 or 1e9 gets the nearest sane size.
const cols = z.number().finite().transform(clampCols);
const rows = z.number().finite().transform(clampRows);
const versionSchema = z.object({ major: z.number().int().min(0), minor: z.number().int().min(0) });
export const sessionIdSchema = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'A session id is 1-64 letters, digits, - or _.');

export const clientMessageSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('attach'),
    /** the client's protocol version; absent means 1.0 */
    protocol: versionSchema.optional(),
    sessionId: sessionIdSchema.optional(),
    cols,
    rows,
    /** a new session's argv instead of the login shell (ignored when joining a session); 1.1 */
    command: z.array(z.string().max(4096)).min(1).max(256).optional(),
    /** extra environment of a new session (ignored when joining); 1.1 */
    env: z.record(z.string().min(1).max(256), z.string().max(16 * 1024)).optional(),
  }),
  /** text input (what xterm.js onData gives); binary INPUT frames carry the same */
  z.object({ type: z.literal('input'), data: z.string().max(MAX_DATA_PAYLOAD) }),
  /** OUTPUT payload bytes the client's parser consumed since its last ack */
  z.object({ type: z.literal('ack'), bytes: z.number().int().min(0).max(2 ** 31) }),
  z.object({ type: z.literal('resize'), cols, rows }),
  /** end the session (hang up the shell), not just this attachment */
  z.object({ type: z.literal('close') }),
]);

export const serverMessageSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('attached'),
    protocol: versionSchema,
    sessionId: sessionIdSchema,
    /** the pty's size now (the most recently active client's) */
    cols: z.number().int(),
    rows: z.number().int(),
    /** serialized screen + scrollback + modes; write it into a reset terminal */
    snapshot: z.string(),
    /** the window title, which the snapshot does not carry */
    title: z.string().max(4096).optional(),
  }),
  z.object({ type: z.literal('resized'), cols: z.number().int(), rows: z.number().int() }),
  z.object({ type: z.literal('error'), code: z.string().max(64), message: z.string().max(4096) }),
  /** the shell ended; `code` is its exit status (128 + n when killed by signal n) */
  z.object({ type: z.literal('exit'), code: z.number().int(), signal: z.number().int().optional() }),
]);

/**
 * The sessions API (`GET /api/v1/workspaces/:owner/:name/terminals`), also what the agent answers
 * on a `terminal-admin` list channel. Times are ISO-8601.
 */
export const terminalSessionSchema = z.object({
  id: sessionIdSchema,
  cols: z.number().int(),
  rows: z.number().int(),
  /** clients attached right now */
  clients: z.number().int().min(0),
  createdAt: z.string(),
  /** since when no client has been attached; null while one is (orphans end after the agent's orphan timeout) */
  idleSince: z.string().nullable(),
  /** the window title the shell set, when it set one */
  title: z.string().max(4096).optional(),
  /** the session's argv */
  command: z.array(z.string()),
});
export const terminalSessionListSchema = z.object({ sessions: z.array(terminalSessionSchema) });
export type TerminalSessionSummary = z.infer<typeof terminalSessionSchema>;
export type TerminalSessionList = z.infer<typeof terminalSessionListSchema>;

export type ClientControl = z.infer<typeof clientMessageSchema>;
export type ServerControl = z.infer<typeof serverMessageSchema>;
export type AttachMessage = Extract<ClientControl, { type: 'attach' }>;
export type ClientMessage = ClientControl | { type: 'input'; data: string | Uint8Array };
export type ServerMessage = ServerControl | { type: 'output'; data: Uint8Array };

/** A message that could not be decoded; `message` is safe to show and to send back in an `error`. */
export class TerminalFrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TerminalFrameError';
  }
}

/** Decodes one websocket message from a client; throws TerminalFrameError, never anything else. */
export function decodeClientMessage(message: string | Uint8Array): ClientMessage {
  if (typeof message !== 'string') {
    const payload = binaryPayload(message, BINARY_TYPE.input, 'INPUT');
    return { type: 'input', data: payload };
  }
  return parseControl(message, MAX_CLIENT_TEXT_BYTES, clientMessageSchema);
}

/** Decodes one websocket message from a server (used by clients: CLI, web, benchmark). */
export function decodeServerMessage(message: string | Uint8Array): ServerMessage {
  if (typeof message !== 'string') return { type: 'output', data: binaryPayload(message, BINARY_TYPE.output, 'OUTPUT') };
  return parseControl(message, MAX_SERVER_TEXT_BYTES, serverMessageSchema);
}

/** Encodes a client message: binary for input bytes, JSON text for the rest. */
export function encodeClientMessage(message: ClientMessage): string | Uint8Array {
  if (message.type === 'input' && typeof message.data !== 'string') return binary(BINARY_TYPE.input, message.data);
  return JSON.stringify(message);
}

/** Encodes a server message: binary for output bytes, JSON text for the rest. */
export function encodeServerMessage(message: ServerMessage): string | Uint8Array {
  if (message.type === 'output') return binary(BINARY_TYPE.output, message.data);
  return JSON.stringify(message);
}

/** Encodes pty bytes as one OUTPUT message (the hot path: no JSON, one copy). */
export function encodeOutput(data: Uint8Array): Uint8Array {
  return binary(BINARY_TYPE.output, data);
}

export function isTerminalProtocolSupported(version: { major: number } | undefined): boolean {
  return (version?.major ?? TERMINAL_PROTOCOL.major) === TERMINAL_PROTOCOL.major;
}

const RECORD_HEADER_BYTES = 5;

/** Frames one websocket message as a record of the agent link's terminal channel. */
export function encodeRecord(message: string | Uint8Array): Uint8Array {
  const bytes = typeof message === 'string' ? new TextEncoder().encode(message) : message;
  const out = new Uint8Array(RECORD_HEADER_BYTES + bytes.byteLength);
  out[0] = typeof message === 'string' ? 0 : 1;
  new DataView(out.buffer).setUint32(1, bytes.byteLength);
  out.set(bytes, RECORD_HEADER_BYTES);
  return out;
}

/** Reassembles records from a terminal channel's byte stream; throws TerminalFrameError on a record above `maxBytes`. */
export class RecordReader {
  readonly #maxBytes: number;
  readonly #decoder = new TextDecoder();
  #buffer = new Uint8Array(0);

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
  }

  push(chunk: Uint8Array): Array<string | Uint8Array> {
    const buffer = this.#buffer.byteLength === 0 ? chunk : concat(this.#buffer, chunk);
    const messages: Array<string | Uint8Array> = [];
    let offset = 0;
    while (buffer.byteLength - offset >= RECORD_HEADER_BYTES) {
      const kind = buffer[offset];
      const length = new DataView(buffer.buffer, buffer.byteOffset + offset + 1, 4).getUint32(0);
      if (kind > 1) throw new TerminalFrameError(`Unknown terminal record kind ${kind}.`);
      if (length > this.#maxBytes) throw new TerminalFrameError(`A terminal record of ${length} bytes exceeds ${this.#maxBytes}.`);
      if (buffer.byteLength - offset - RECORD_HEADER_BYTES < length) break;
      const body = buffer.subarray(offset + RECORD_HEADER_BYTES, offset + RECORD_HEADER_BYTES + length);
      messages.push(kind === 0 ? this.#decoder.decode(body) : body.slice());
      offset += RECORD_HEADER_BYTES + length;
    }
    this.#buffer = buffer.slice(offset);
    return messages;
  }
}

/** The websocket close code the server uses when a terminal channel closes with `errorCode` (none: the session ended). */
export function closeCodeForError(errorCode: string | undefined): number {
  switch (errorCode) {
    case undefined:
    case 'TERMINAL_START_FAILED': // a shell that cannot start now will not start on a reconnect either
      return TERMINAL_CLOSE.sessionEnded;
    case 'TERMINAL_SESSION_NOT_FOUND':
      return TERMINAL_CLOSE.sessionNotFound;
    case 'TERMINAL_CLIENT_TOO_SLOW':
      return TERMINAL_CLOSE.clientTooSlow;
    case 'TERMINAL_MESSAGE_INVALID':
      return TERMINAL_CLOSE.protocolError;
    case 'TERMINAL_PROTOCOL_UNSUPPORTED':
      return TERMINAL_CLOSE.protocolUnsupported;
    case 'WORKSPACE_NOT_RUNNING':
      return TERMINAL_CLOSE.workspaceNotRunning;
    case 'UNAUTHENTICATED':
    case 'USER_SUSPENDED':
    case 'FORBIDDEN':
    case 'WORKSPACE_NOT_FOUND':
      return TERMINAL_CLOSE.unauthorized;
    default:
      return TERMINAL_CLOSE.goingAway;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

function binary(type: number, data: Uint8Array): Uint8Array {
  if (data.byteLength > MAX_DATA_PAYLOAD) throw new TerminalFrameError(`A terminal data frame carries at most ${MAX_DATA_PAYLOAD} bytes; split the write.`);
  const out = new Uint8Array(1 + data.byteLength);
  out[0] = type;
  out.set(data, 1);
  return out;
}

function binaryPayload(message: Uint8Array, expected: number, name: string): Uint8Array {
  if (message.byteLength < 1) throw new TerminalFrameError('An empty binary message is not a terminal frame.');
  if (message[0] !== expected) throw new TerminalFrameError(`Binary type 0x${message[0].toString(16).padStart(2, '0')} is not ${name} (0x0${expected}).`);
  if (message.byteLength - 1 > MAX_DATA_PAYLOAD) throw new TerminalFrameError(`A terminal data frame carries ${message.byteLength - 1} bytes; the maximum is ${MAX_DATA_PAYLOAD}.`);
  return message.subarray(1);
}

function parseControl<S extends z.ZodType>(message: string, maxBytes: number, schema: S): z.infer<S> {
  const parsed = parseJsonFrame(message, maxBytes, schema, 'terminal control message');
  if (!parsed.ok) throw new TerminalFrameError(parsed.message);
  return parsed.value;
}

function clamp(value: number, min: number, max: number): number {
  if (!Number.isFinite(value)) return min;
  return Math.min(max, Math.max(min, Math.trunc(value)));
}
