import { syncStatusListSchema } from '../protocol/sync.ts';
import {
  buildListSchema,
  buildLogLineSchema,
  buildSchema,
  workspaceEventListSchema,
  workspaceListSchema,
  workspaceSchema,
  workspaceWithBuildSchema,
  type BuildLogLine,
  type CreateWorkspaceRequest,
} from '../protocol/workspaces.ts';
import { terminalSessionListSchema } from '../protocol/terminal.ts';
import { sshSessionListSchema } from '../protocol/ssh.ts';
import { shareSchema, workspacePortsSchema } from '../protocol/apps.ts';
import type { ShareLevel } from '../protocol/template-fields.ts';
import type { z } from 'zod';
import { serviceLogLineSchema, type ServiceLogLine } from '../protocol/services.ts';
import { errorEnvelopeSchema } from '../protocol/errors.ts';
import { errorFromCode } from './errors.ts';
import { clientEventSchema, type WorkspaceEvent } from '../protocol/events.ts';
import { segment, type Transport } from './http.ts';

export type WorkspaceTransition = 'start' | 'stop' | 'restart' | 'update' | 'delete';
export type ParameterValues = z.input<typeof workspaceWithBuildSchema>['workspace']['params'];

/** Workspaces and their builds: /api/v1/workspaces[/:owner/:name[/...]]. */
export class WorkspacesApi {
  readonly #transport: Transport;

  constructor(transport: Transport) {
    this.#transport = transport;
  }

  list(query: { owner?: string; all?: boolean; limit?: number; offset?: number } = {}) {
    return this.#transport.request('GET', '/api/v1/workspaces', {
      query: { owner: query.owner, all: query.all ? '1' : undefined, limit: query.limit, offset: query.offset },
      schema: workspaceListSchema,
    });
  }

  get(owner: string, name: string, signal?: AbortSignal) {
    return this.#transport.request('GET', workspacePath(owner, name), { schema: workspaceSchema, signal });
  }

  /** Creates the workspace and queues its first (start) build. */
  create(body: CreateWorkspaceRequest) {
    return this.#transport.request('POST', '/api/v1/workspaces', { body, schema: workspaceWithBuildSchema });
  }

  /** Queues a build for the transition and answers with the workspace and that build. */
  transition(owner: string, name: string, transition: WorkspaceTransition, body: { params?: Record<string, unknown> } = {}) {
    if (transition === 'delete') {
      return this.#transport.request('DELETE', workspacePath(owner, name), { schema: workspaceWithBuildSchema });
    }
    return this.#transport.request('POST', `${workspacePath(owner, name)}/${transition}`, { body, schema: workspaceWithBuildSchema });
  }

  /** Cancels the queued or running build; answers with the workspace and that build as they are now. */
  cancel(owner: string, name: string) {
    return this.#transport.request('POST', `${workspacePath(owner, name)}/cancel`, { body: {}, schema: workspaceWithBuildSchema });
  }

  builds(owner: string, name: string) {
    return this.#transport.request('GET', `${workspacePath(owner, name)}/builds`, { schema: buildListSchema });
  }

  /** What happened to the workspace that its owner should know, newest first. */
  /** The workspace's open SSH connections (on the replica that answers). */
  sshSessions(owner: string, name: string) {
    return this.#transport.request('GET', `${workspacePath(owner, name)}/ssh-sessions`, { schema: sshSessionListSchema });
  }

  /** The workspace's apps and the ports listening in it now, with their URLs through den. */
  ports(owner: string, name: string) {
    return this.#transport.request('GET', `${workspacePath(owner, name)}/ports`, { schema: workspacePortsSchema });
  }

  /** Shares an app (by name) or port (by number) of the workspace at `level`. */
  share(owner: string, name: string, target: string, level: ShareLevel) {
    return this.#transport.request('PUT', `${workspacePath(owner, name)}/shares/${segment(target)}`, { body: { level }, schema: shareSchema });
  }

  syncStatus(owner: string, name: string) {
    return this.#transport.request('GET', `${workspacePath(owner, name)}/sync`, { schema: syncStatusListSchema });
  }

  syncRestart(owner: string, name: string, service?: string) {
    return this.#transport.request('POST', `${workspacePath(owner, name)}/sync/restart`, { body: service ? { service } : {}, schema: syncStatusListSchema });
  }

  events(owner: string, name: string) {
    return this.#transport.request('GET', `${workspacePath(owner, name)}/events`, { schema: workspaceEventListSchema });
  }

  build(owner: string, name: string, number: number, signal?: AbortSignal) {
    return this.#transport.request('GET', `${workspacePath(owner, name)}/builds/${segment(number)}`, { schema: buildSchema, signal });
  }

  /** The build log so far (lines after `after`). */
  async logs(owner: string, name: string, number: number, options: { after?: number; signal?: AbortSignal } = {}): Promise<BuildLogLine[]> {
    const lines: BuildLogLine[] = [];
    for await (const line of this.#logStream(owner, name, number, { ...options, follow: false })) lines.push(line);
    return lines;
  }

  /** The build log so far, then live lines until the build finishes (or `signal` aborts). */
  followLogs(owner: string, name: string, number: number, options: { after?: number; signal?: AbortSignal } = {}): AsyncGenerator<BuildLogLine> {
    return this.#logStream(owner, name, number, { ...options, follow: true });
  }

  /**
   * Status, build progress and agent state changes of the workspaces the caller may see (all of
   * them for an owner), as they happen, until `signal` aborts. A stream the server ends (too
   * slow to keep up, or access revoked) throws its coded error.
   */
  async *watch(options: { signal?: AbortSignal } = {}): AsyncGenerator<WorkspaceEvent> {
    for await (const item of this.#transport.stream('/api/v1/events', { signal: options.signal })) {
      const parsed = clientEventSchema.safeParse(item);
      if (!parsed.success) continue; // a newer server's event type this client does not know
      const event = parsed.data;
      if ('error' in event) {
        throwStreamError(event);
        return;
      }
      yield event;
    }
  }

  async *#logStream(
    owner: string,
    name: string,
    number: number,
    options: { after?: number; signal?: AbortSignal; follow: boolean },
  ): AsyncGenerator<BuildLogLine> {
    const events = this.#transport.stream(`${workspacePath(owner, name)}/builds/${segment(number)}/logs`, {
      query: { follow: options.follow ? '1' : undefined, after: options.after || undefined },
      signal: options.signal,
    });
    for await (const event of events) {
      // A non-streaming answer may wrap the lines: { lines: [...] }.
      const items = Array.isArray((event as { lines?: unknown }).lines) ? (event as { lines: unknown[] }).lines : [event];
      for (const item of items) {
        const parsed = buildLogLineSchema.safeParse(item);
        if (parsed.success) yield parsed.data;
        else throwStreamError(item);
        // Anything else (keep-alives, an end marker) carries no log line.
      }
    }
  }

  /**
   * An environment service's output: the last `tail` lines (all kept when omitted), then with
   * `follow` live lines until the service ends or `signal` aborts.
   */
  async *serviceLogs(owner: string, name: string, service: string, options: { tail?: number; follow?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<ServiceLogLine> {
    const events = this.#transport.stream(`${workspacePath(owner, name)}/services/${segment(service)}/logs`, {
      query: { follow: options.follow ? '1' : undefined, tail: options.tail },
      signal: options.signal,
    });
    for await (const event of events) {
      const parsed = serviceLogLineSchema.safeParse(event);
      if (parsed.success) yield parsed.data;
      else throwStreamError(event);
    }
  }

  /** The workspace's terminal sessions, or those of the agent beside `service` (attach with client/terminal.ts). */
  terminals(owner: string, name: string, service?: string) {
    return this.#transport.request('GET', `${workspacePath(owner, name)}/terminals`, { schema: terminalSessionListSchema, query: { service } });
  }

  /** Ends a terminal session (its shell is hung up). */
  closeTerminal(owner: string, name: string, id: string, service?: string) {
    return this.#transport.request('DELETE', `${workspacePath(owner, name)}/terminals/${segment(id)}`, { query: { service } });
  }
}

export function workspacePath(owner: string, name: string): string {
  return `/api/v1/workspaces/${segment(owner)}/${segment(name)}`;
}

/**
 * A log stream that the server ends early (the reader's access was taken away, the read failed)
 * ends with an error envelope as its last event: thrown as the error it carries.
 */
export function throwStreamError(event: unknown): void {
  const envelope = errorEnvelopeSchema.safeParse(event);
  if (!envelope.success) return;
  const { code, message } = envelope.data.error;
  throw errorFromCode(code, message);
}
