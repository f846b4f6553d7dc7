import {
  environmentGrantListSchema, environmentGrantSchema, environmentLogLineSchema, environmentRunDetailSchema, environmentRunListSchema,
  environmentViewSchema, runStreamLineSchema, sharedEnvironmentListSchema, type EnvironmentLogLine, type RunStreamLine,
} from '../protocol/environments.ts';
import { errorFromNetwork, isAbortError } from './errors.ts';
import { segment, type Transport } from './http.ts';
import { readEvents } from './stream.ts';
import { throwStreamError, workspacePath } from './workspaces.ts';

/** A workspace's environment (docs/environments.md): /api/v1/workspaces/:owner/:name/env[...]. */
export class EnvironmentsApi {
  readonly #transport: Transport;

  constructor(transport: Transport) {
    this.#transport = transport;
  }

  /** Services with status and version, apps, tasks and tests with their latest runs (owner and teammates). */
  view(owner: string, name: string) {
    return this.#transport.request('GET', `${envPath(owner, name)}`, { schema: environmentViewSchema });
  }

  /** Several services' output (all when `services` is empty), each line with its service and time. */
  async *logs(owner: string, name: string, options: { services?: string[]; tail?: number; follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<EnvironmentLogLine> {
    const events = this.#transport.stream(`${envPath(owner, name)}/logs`, {
      query: { service: options.services?.length ? options.services.join(',') : undefined, tail: options.tail, follow: options.follow ? '1' : undefined },
      signal: options.signal,
    });
    for await (const event of events) {
      const parsed = environmentLogLineSchema.safeParse(event);
      if (parsed.success) yield parsed.data;
      else throwStreamError(event);
    }
  }

  /**
   * Runs a task or test: its output lines as they come, then `{ type: 'result' }` (for a test
   * with a passed result of its current version: that result alone, cached, unless `force`).
   */
  async *run(owner: string, name: string, kind: 'task' | 'test', entry: string, options: { force?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<RunStreamLine> {
    const response = await this.#transport.send('POST', `${envPath(owner, name)}/${kind}s/${segment(entry)}/run`, {
      query: { force: options.force ? '1' : undefined }, body: {}, signal: options.signal, headers: { accept: 'application/x-ndjson' },
    });
    if (!response.body) return;
    try {
      for await (const event of readEvents(response.body, 'ndjson')) {
        const parsed = runStreamLineSchema.safeParse(event);
        if (parsed.success) yield parsed.data;
        else throwStreamError(event);
      }
    } catch (error) {
      if (isAbortError(error)) return;
      throw error instanceof Error && 'code' in error ? error : errorFromNetwork(error, this.#transport.baseUrl);
    }
  }

  /** Task and test runs, newest first. */
  history(owner: string, name: string, query: { kind?: 'task' | 'test'; name?: string; limit?: number } = {}) {
    return this.#transport.request('GET', `${envPath(owner, name)}/runs`, { query, schema: environmentRunListSchema });
  }

  runDetail(owner: string, name: string, id: string) {
    return this.#transport.request('GET', `${envPath(owner, name)}/runs/${segment(id)}`, { schema: environmentRunDetailSchema });
  }

  grants(owner: string, name: string) {
    return this.#transport.request('GET', `${envPath(owner, name)}/grants`, { schema: environmentGrantListSchema });
  }

  grant(owner: string, name: string, user: string) {
    return this.#transport.request('PUT', `${envPath(owner, name)}/grants/${segment(user)}`, { body: {}, schema: environmentGrantSchema });
  }

  revoke(owner: string, name: string, user: string) {
    return this.#transport.request('DELETE', `${envPath(owner, name)}/grants/${segment(user)}`);
  }

  grantGroup(owner: string, name: string, group: string) {
    return this.#transport.request('PUT', `${envPath(owner, name)}/grants/groups/${segment(group)}`, { body: {}, schema: environmentGrantSchema });
  }

  revokeGroup(owner: string, name: string, group: string) {
    return this.#transport.request('DELETE', `${envPath(owner, name)}/grants/groups/${segment(group)}`);
  }

  /** The environments others let the signed-in user see, directly or through a group. */
  shared() {
    return this.#transport.request('GET', '/api/v1/environments/shared', { schema: sharedEnvironmentListSchema });
  }
}

function envPath(owner: string, name: string): string {
  return `${workspacePath(owner, name)}/env`;
}
