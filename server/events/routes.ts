import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { AppError } from '../../protocol/errors.ts';
import type { ClientEvent, WorkspaceEvent } from '../../protocol/events.ts';
import { principalOf, type Principal } from '../http/auth-types.ts';
import { logStreamLifetime } from '../workspaces/log-stream.ts';
import { canAccessWorkspace, getWorkspaceIdentity } from '../workspaces/access.ts';
import type { EventBus } from './bus.ts';
import type { Store } from '../store/connect.ts';

/**
 * Bytes of events a subscriber may have waiting beyond what its socket holds. A client that
 * falls this far behind is dropped with a `dropped` event (it re-reads the state and opens the
 * stream again): the server keeps at most this much per subscriber, whatever the event rate.
 * About a thousand events, far more than any burst of status changes a reader could miss.
 */
const MAX_PENDING_EVENT_BYTES = 256 * 1024;
/** Events waiting for their authorization check (the store's answer on a workspace's owner) past which a stream is dropped. */
const MAX_CHECKING_EVENTS = 1_000;
/** How long a dropped stream's last event waits to be read before the socket is cut. */
const DROPPED_STREAM_GRACE_MS = 5_000;
/** A comment line this often keeps proxies and the client's idle timeouts from closing a quiet stream. */
const KEEP_ALIVE_MS = 15_000;
/** Owners of workspaces seen by the streams (an owner never changes); cleared when it grows past this. */
const OWNER_CACHE_LIMIT = 10_000;

/** `GET /api/v1/events`: server-sent events of the workspaces the caller may see. */
export interface EventRoutesOptions {
  events: EventBus;
  store: Store;
}

export async function eventRoutes(app: FastifyInstance, options: EventRoutesOptions): Promise<void> {
  const typed = app.withTypeProvider<ZodTypeProvider>();
  // One lookup per workspace however many streams ask at once.
  const owners = new Map<string, Promise<string | undefined>>();

  function ownerOf(workspaceId: string): Promise<string | undefined> {
    const known = owners.get(workspaceId);
    if (known) return known;
    if (owners.size >= OWNER_CACHE_LIMIT) owners.clear();
    const lookup = getWorkspaceIdentity(options.store.db, workspaceId).then((identity) => {
      // a miss is not kept: the row may be committed after all (or the store failed for a moment)
      if (!identity) owners.delete(workspaceId);
      return identity?.ownerId;
    }, (error: unknown) => {
      owners.delete(workspaceId);
      throw error;
    });
    owners.set(workspaceId, lookup);
    return lookup;
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
    const drop = () => {
      end({ type: 'dropped', ...tooSlow().toEnvelope() });
      // a reader that stopped reading altogether would hold its socket and buffers for ever
      setTimeout(() => reply.raw.destroy(), DROPPED_STREAM_GRACE_MS).unref();
    };
    // Events are checked one after another so they reach the client in the order published;
    // while a check waits for the store, later events wait in this chain (bounded too).
    let delivered = Promise.resolve();
    let checking = 0;
    const stopListening = options.events.subscribe((id, event) => {
      if (ended) return;
      if (++checking > MAX_CHECKING_EVENTS) return drop();
      delivered = delivered.then(async () => {
        const visible = !ended && await maySee(principal, event);
        checking--;
        if (!visible) return;
        if (stream.readableLength > MAX_PENDING_EVENT_BYTES) return drop();
        stream.push(message(id, event));
      }).catch((error) => {
        checking--;
        request.log.warn({ err: error }, 'delivering an event failed');
      });
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
