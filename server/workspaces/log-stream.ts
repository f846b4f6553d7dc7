import type { FastifyReply, FastifyRequest } from 'fastify';
import type { AppError } from '../../protocol/errors.ts';
import type { TrackedWorkspace } from '../auth/live-access.ts';
import { trackLiveAccess } from '../auth/plugin.ts';

/**
 * A reader that stops reading after access was taken away gets its socket cut this long after:
 * the error line waits for it in the stream until then.
 */
const REVOKED_STREAM_GRACE_MS = 1_000;

export interface LogStreamLifetime {
  /** aborts when the client goes away or the access that opened the stream is taken away */
  signal: AbortSignal;
  /** the error to end the stream with, once access was taken away */
  revoked(): AppError | undefined;
}

/**
 * The lifetime of a streamed log response (build or service log, read or followed): it lasts
 * while the client reads and while the access that opened it stands (suspension, logout, a
 * revoked token end it, as they end terminals). The producer stops at `signal` and then ends
 * the stream with `revoked()`'s envelope as its last line.
 */
export function logStreamLifetime(request: FastifyRequest, reply: FastifyReply, workspace: TrackedWorkspace): LogStreamLifetime {
  const abort = new AbortController();
  let revokedBy: AppError | undefined;
  let cut: NodeJS.Timeout | undefined;
  const untrack = trackLiveAccess(request, workspace, (error) => {
    revokedBy = error;
    abort.abort();
    cut = setTimeout(() => reply.raw.destroy(), REVOKED_STREAM_GRACE_MS);
    cut.unref();
  });
  // The response closes when the client goes away (the request's 'close' only says its body was read).
  reply.raw.once('close', () => {
    untrack();
    clearTimeout(cut);
    abort.abort();
  });
  return { signal: abort.signal, revoked: () => revokedBy };
}
