import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { AppError } from '../../protocol/errors.ts';
import type { ClientEvent, WorkspaceEvent } from '../../protocol/events.ts';
import { principalOf, type Principal } from '../http/auth-types.ts';
import { logStreamLifetime } from '../workspaces/log-stream.ts';
import { canAccessWorkspace, getWorkspaceIdentity } from '../workspaces/access.ts';
import type { EventBus } from './bus.ts';

/**
 * Bytes of events a subscriber may have waiting beyond what its socket holds. A client that
 * falls this far behind is dropped with a `dropped` event (it re-reads the state and opens the
 * stream again): the server keeps at most this much per subscriber, whatever the event rate.
 * About a thousand events, far more than any burst of status changes a reader could miss.
 */
export const MAX_PENDING_EVENT_BYTES = 256 * 1024;
/** How long a dropped stream's last event waits to be read before the socket is cut. */
const DROPPED_STREAM_GRACE_MS = 5_000;
/** A comment line this often keeps proxies and the client's idle timeouts from closing a quiet stream. */
const KEEP_ALIVE_MS = 15_000;
/** Owners of workspaces seen by the streams (an owner never changes); cleared when it grows past this. */
const OWNER_CACHE_LIMIT = 10_000;

/** `GET /api/v1/events`: server-sent events of the workspaces the caller may see. */
export async function eventRoutes(app: FastifyInstance, options: { events: EventBus }): Promise<void> {
  const typed = app.withTypeProvider<ZodTypeProvider>();
  const owners = new Map<string, string | undefined>();

  async function ownerOf(workspaceId: string): Promise<string | undefined> {
    if (owners.has(workspaceId)) return owners.get(workspaceId);
    const identity = await getWorkspaceIdentity(app.den.store.db, workspaceId);
    if (owners.size >= OWNER_CACHE_LIMIT) owners.clear();
    owners.set(workspaceId, identity?.ownerId);
    return identity?.ownerId;
  }

  async function maySee(principal: Principal, event: WorkspaceEvent): Promise<boolean> {
    if (principal.role === 'owner') return true;
    const owner = await ownerOf(event.workspaceId);
    return owner !== undefined && canAccessWorkspace(principal, owner);
  }

  typed.get('/events', {
    config: { auth: 'user' },
    schema: {
      tags: ['events'],
      summary: 'Server-sent events: status, build progress and agent state of the workspaces you may see (every workspace for an owner)',
    },
  }, async (request, reply) => {
    const principal = principalOf(request);
    const stream = new Readable({ read() {} });
    // An owner's stream shows everyone's workspaces: a role change away from owner ends it.
    const lifetime = logStreamLifetime(request, reply, {
      label: 'every workspace',
      allows: (now) => principal.role !== 'owner' || now.role === 'owner',
    });
    let ended = false;
    const end = (last: ClientEvent) => {
      if (ended) return;
      ended = true;
      stopListening();
      clearInterval(keepAlive);
      stream.push(message(undefined, last));
      stream.push(null);
    };
    // Events are checked one after another so they reach the client in the order published.
    let delivered = Promise.resolve();
    const stopListening = options.events.subscribe((id, event) => {
      delivered = delivered.then(async () => {
        if (ended || !(await maySee(principal, event))) return;
        if (stream.readableLength > MAX_PENDING_EVENT_BYTES) {
          end({ type: 'dropped', ...tooSlow().toEnvelope() });
          // a reader that stopped reading altogether would hold its socket and buffers for ever
          setTimeout(() => reply.raw.destroy(), DROPPED_STREAM_GRACE_MS).unref();
          return;
        }
        stream.push(message(id, event));
      }).catch((error) => request.log.warn({ err: error }, 'delivering an event failed'));
    });
    const keepAlive = setInterval(() => stream.push(': keep-alive\n\n'), KEEP_ALIVE_MS);
    keepAlive.unref(); // the stream's socket, not this timer, keeps a server process alive
    const onAbort = () => {
      const revoked = lifetime.revoked();
      if (revoked) end({ type: 'revoked', ...revoked.toEnvelope() });
      else {
        // the client went away
        ended = true;
        stopListening();
        clearInterval(keepAlive);
        stream.destroy();
      }
    };
    // access may have been revoked while the request was authenticated: then it is aborted already
    if (lifetime.signal.aborted) onAbort();
    else lifetime.signal.addEventListener('abort', onAbort, { once: true });
    reply.header('cache-control', 'no-cache');
    reply.header('x-accel-buffering', 'no');
    reply.type('text/event-stream');
    // opens the stream at once, so a client knows it is subscribed before any event
    stream.push(': subscribed\n\n');
    return reply.send(stream);
  });
}

/** One SSE message; the stream's last event (dropped, revoked) has no id: it is not a workspace event to resume after. */
function message(id: number | undefined, event: ClientEvent): string {
  return `${id === undefined ? '' : `id: ${id}\n`}event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

function tooSlow(): AppError {
  return new AppError('EVENTS_SUBSCRIBER_TOO_SLOW',
    'This event stream fell too far behind the events and was ended. Open it again (`den list --watch`); `den list` shows the current state.');
}
