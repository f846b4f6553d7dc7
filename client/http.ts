import type { z } from 'zod';
import { DenApiError, errorFromNetwork, errorFromResponse, isAbortError } from './errors.ts';
import { readEvents } from './stream.ts';

/**
 * The transport under DenClient: base URL, bearer token, JSON in and out, the error envelope.
 * Uses only fetch, URL and streams, so it runs in Node 24 and in browsers alike.
 */
export interface TransportOptions {
  /** the server's base URL, for example http://127.0.0.1:7080 */
  url: string;
  /** an API token; omitted for public routes or cookie sessions in the browser */
  token?: string;
  /** replaced in tests or to add headers; defaults to the global fetch */
  fetch?: typeof fetch;
  /** browser: send the session cookie (credentials: 'include') */
  credentials?: RequestCredentials;
  /** extra headers on every request, e.g. a CSRF token in the browser */
  headers?: Record<string, string>;
}

export interface RequestOptions<S extends z.ZodType | undefined> {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  /** the zod schema of the 2xx response body; undefined for empty responses */
  schema?: S;
  signal?: AbortSignal;
}

export type Parsed<S> = S extends z.ZodType ? z.infer<S> : void;

export class Transport {
  readonly baseUrl: string;
  readonly token?: string;
  readonly #fetch: typeof fetch;
  readonly #options: TransportOptions;

  constructor(options: TransportOptions) {
    this.baseUrl = options.url.replace(/\/+$/, '');
    this.token = options.token;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#options = options;
  }

  /** Sends one request; resolves with the parsed body or throws DenApiError. */
  async request<S extends z.ZodType | undefined = undefined>(
    method: string,
    path: string,
    options: RequestOptions<S> = {},
  ): Promise<Parsed<S>> {
    const response = await this.send(method, path, options);
    const text = await response.text();
    if (!options.schema) return undefined as Parsed<S>;
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch (error) {
      throw this.#badResponse(method, path, 'it is not JSON', error);
    }
    const parsed = options.schema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw this.#badResponse(method, path, `${issue?.path.join('.') || 'the body'}: ${issue?.message ?? 'unexpected shape'}`, parsed.error);
    }
    return parsed.data as Parsed<S>;
  }

  /**
   * Opens a streaming response (NDJSON or server-sent events) and yields each event's JSON,
   * until the server ends the stream or `signal` aborts.
   */
  async *stream(path: string, options: { query?: RequestOptions<undefined>['query']; signal?: AbortSignal } = {}): AsyncGenerator<unknown> {
    const response = await this.send('GET', path, {
      ...options,
      headers: { accept: 'application/x-ndjson' },
    });
    const contentType = response.headers.get('content-type') ?? '';
    if (!response.body) return;
    if (contentType.includes('application/json')) {
      // A server that does not stream answered with the whole list at once.
      const json: unknown = await response.json();
      const items = Array.isArray(json) ? json : [json];
      yield* items;
      return;
    }
    try {
      yield* readEvents(response.body, contentType.includes('text/event-stream') ? 'sse' : 'ndjson');
    } catch (error) {
      if (isAbortError(error)) return;
      throw errorFromNetwork(error, this.baseUrl);
    }
  }

  /** The raw fetch with auth and error handling; non-2xx becomes DenApiError. */
  async send(
    method: string,
    path: string,
    options: { query?: RequestOptions<undefined>['query']; body?: unknown; signal?: AbortSignal; headers?: Record<string, string> } = {},
  ): Promise<Response> {
    const url = this.url(path, options.query);
    const headers: Record<string, string> = { accept: 'application/json', ...this.#options.headers, ...options.headers };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let body: string | undefined;
    if (options.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.body);
    }
    let response: Response;
    try {
      response = await this.#fetch(url, { method, headers, body, signal: options.signal, credentials: this.#options.credentials });
    } catch (error) {
      if (isAbortError(error)) throw error;
      throw errorFromNetwork(error, url);
    }
    if (!response.ok) {
      const text = await response.text().catch(() => '');
      throw errorFromResponse(response.status, response.statusText, text, url);
    }
    return response;
  }

  /** An absolute URL for `path` (starting with /api/...) with query parameters. */
  url(path: string, query?: RequestOptions<undefined>['query']): string {
    const url = new URL(this.baseUrl + path);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    return url.toString();
  }

  #badResponse(method: string, path: string, why: string, cause: unknown): DenApiError {
    return new DenApiError(
      'BAD_RESPONSE',
      200,
      `The server answered ${method} ${path} with a body this client does not understand (${why}). Check that the CLI and the server are the same version.`,
      { cause },
    );
  }
}

/** Percent-encodes each segment of a path built from user input (workspace and template names). */
export function segment(value: string | number): string {
  return encodeURIComponent(String(value));
}
