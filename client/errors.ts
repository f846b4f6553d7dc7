import { ERROR_CODES, errorEnvelopeSchema, type ValidationIssue } from '../protocol/errors.ts';

/**
 * An error answered by a den server (the error envelope of protocol/errors.ts), or a failure to
 * reach one. `message` is always a full sentence meant for the user; CLI and web show it as is.
 */
export class DenApiError extends Error {
  /** an ErrorCode from protocol/errors.ts, or NETWORK / BAD_RESPONSE for client-side failures */
  readonly code: string;
  /** the HTTP status; 0 when no response arrived */
  readonly status: number;
  readonly detail?: string;
  readonly validations?: ValidationIssue[];
  /** the websocket close code, when the error ended a socket (protocol/terminal.ts TERMINAL_CLOSE) */
  readonly closeCode?: number;

  constructor(
    code: string,
    status: number,
    message: string,
    options: { detail?: string; validations?: ValidationIssue[]; cause?: unknown; closeCode?: number } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = 'DenApiError';
    this.code = code;
    this.status = status;
    this.detail = options.detail;
    this.validations = options.validations;
    this.closeCode = options.closeCode;
  }
}

export function isDenApiError(value: unknown): value is DenApiError {
  return value instanceof DenApiError;
}

/**
 * An error the server sent inside a stream or a socket (a terminal `error`, an exec error, the
 * last event of a log stream) rather than as an HTTP answer: its status is the one the code
 * has in protocol/errors.ts (0 for a code this client does not know).
 */
export function errorFromCode(code: string, message: string, options: { detail?: string; validations?: ValidationIssue[] } = {}): DenApiError {
  const status = (ERROR_CODES as Record<string, { status: number } | undefined>)[code]?.status ?? 0;
  return new DenApiError(code, status, message, options);
}

/** Turns a non-2xx response body into a DenApiError, also when it is not den's envelope (a proxy's HTML page). */
export function errorFromResponse(status: number, statusText: string, bodyText: string, url: string): DenApiError {
  let json: unknown;
  try {
    json = JSON.parse(bodyText);
  } catch {
    json = undefined;
  }
  const parsed = errorEnvelopeSchema.safeParse(json);
  if (parsed.success) {
    const { code, message, detail, validations } = parsed.data.error;
    return new DenApiError(code, status, message, { detail, validations });
  }
  return new DenApiError(
    status === 404 ? 'NOT_FOUND' : 'BAD_RESPONSE',
    status,
    `The server at ${originOf(url)} answered ${status}${statusText ? ` ${statusText}` : ''} without a den error. Check that the URL points at a den server.`,
  );
}

/** Turns a fetch failure (refused, DNS, TLS, reset) into one sentence. */
export function errorFromNetwork(error: unknown, url: string): DenApiError {
  if (error instanceof DenApiError) return error;
  const reason = networkReason(error);
  return new DenApiError('NETWORK', 0, `Cannot reach den at ${originOf(url)}: ${reason}. Is the server running?`, { cause: error });
}

/** Aborted by the caller (Ctrl-C, a timeout signal): not a network problem. */
export function isAbortError(error: unknown): boolean {
  return error instanceof Error && (error.name === 'AbortError' || error.name === 'TimeoutError');
}

function networkReason(error: unknown): string {
  // undici wraps the system error: TypeError('fetch failed', { cause: { code: 'ECONNREFUSED' } });
  // prefer a system code, else the innermost message ("bad port", a TLS complaint).
  let current: unknown = error;
  let message = error instanceof Error ? error.message : String(error);
  for (let depth = 0; depth < 4 && current; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'UND_ERR_SOCKET' && !code.startsWith('ERR_')) return code;
    if (current instanceof Error && current.message) message = current.message;
    const errors = (current as { errors?: unknown[] }).errors;
    current = Array.isArray(errors) && errors.length > 0 ? errors[0] : (current as { cause?: unknown }).cause;
  }
  return message;
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}
