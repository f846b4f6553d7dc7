import { AppError } from '../../protocol/errors.ts';
import type { Role } from '../store/schema.ts';
import type { PgNotifier } from '../store/pg-notify.ts';
import { forgetEverything, forgetRevoked } from './principal-cache.ts';

/**
 * Announcements that some access ended: the users and auth domains publish one after the change
 * is committed, and whatever holds access on a principal's behalf (the principal cache, open
 * terminals, execs and log follows) listens. On SQLite the bus is in-process; replicas sharing a
 * PostgreSQL database share one over LISTEN/NOTIFY.
 */

export type Revocation =
  /** every credential of the user: suspension or deletion */
  | { kind: 'user'; userId: string; reason: 'suspended' | 'deleted' }
  /** the user's cookie sessions: a password change or reset ends them, API tokens stay valid */
  | { kind: 'sessions'; userId: string; reason: 'password-changed' }
  /** one API token: revoked, or used to log out */
  | { kind: 'token'; userId: string; tokenId: string }
  /** one cookie session (logout); idHash is the sha256 of the cookie */
  | { kind: 'session'; userId: string; idHash: string }
  /** one SSH key, removed from its user's account: the SSH connections it opened end */
  | { kind: 'ssh-key'; userId: string; keyId: string }
  /**
   * The user's role changed. It ends only what the old role allowed and the new one does not:
   * the owner role reaches every workspace, any other role only the user's own.
   */
  | { kind: 'role'; userId: string; role: Role };

export interface RevocationBus {
  /** Delivers to every listener (of every replica, for a shared bus); call after the change is committed. */
  publish(revocation: Revocation): void;
  /** Returns the unsubscribe function. */
  subscribe(listener: (revocation: Revocation) => void): () => void;
}

/**
 * A bus for one process. It always invalidates this process's principal cache first, so no
 * listener and no later request can see a principal the revocation ended.
 */
export function createLocalRevocationBus(log?: { error(details: object, message: string): void }): RevocationBus {
  const listeners = new Set<(revocation: Revocation) => void>();
  return {
    publish(revocation) {
      forgetRevoked(revocation);
      for (const listener of listeners) {
        // the change is committed already: one failing listener must not keep the others from hearing of it
        try {
          listener(revocation);
        } catch (error) {
          log?.error({ err: error, revocation: revocation.kind }, 'a revocation listener failed');
        }
      }
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

const REVOCATIONS_CHANNEL = 'den_revocations';

/**
 * The bus of replicas sharing one PostgreSQL database: a revocation published here ends access
 * in this process at once (as on the local bus) and in the other replicas through NOTIFY, so
 * none of them honours a revoked credential until its principal cache expires. While the LISTEN
 * connection was down a revocation may have been missed: every cached principal is dropped when
 * it comes back, so the next request of each reads the store again.
 */
export function createPgRevocationBus(notifier: PgNotifier, log: { error(details: object, message: string): void }): RevocationBus {
  const local = createLocalRevocationBus(log);
  notifier.listen(REVOCATIONS_CHANNEL, (message) => {
    if (isRevocation(message)) local.publish(message);
    else log.error({}, 'another replica sent a revocation this one does not understand; it was ignored');
  });
  notifier.onReconnect(forgetEverything);
  return {
    publish(revocation) {
      local.publish(revocation);
      // a revocation is a few ids, far below the NOTIFY limit
      if (!notifier.notify(REVOCATIONS_CHANNEL, revocation)) log.error({ revocation: revocation.kind }, 'a revocation was too large for a NOTIFY');
    },
    subscribe: (listener) => local.subscribe(listener),
  };
}

function isRevocation(message: unknown): message is Revocation {
  if (typeof message !== 'object' || message === null) return false;
  const { kind, userId } = message as { kind?: unknown; userId?: unknown };
  return typeof userId === 'string' && ['user', 'sessions', 'token', 'session', 'ssh-key', 'role'].includes(kind as string);
}

/** What a connection that a revocation ended tells its client: a coded error with what to do next. */
export function revocationError(revocation: Revocation, workspaceLabel: string): AppError {
  switch (revocation.kind) {
    case 'user':
      return revocation.reason === 'suspended'
        ? new AppError('USER_SUSPENDED', 'Your account was suspended, so den closed this connection. Ask an owner of this den server to reactivate it.')
        : new AppError('UNAUTHENTICATED', 'Your account was deleted, so den closed this connection. Ask an owner of this den server for a new account.');
    case 'sessions':
      return new AppError('UNAUTHENTICATED', 'The password of your account was changed, which ends its browser sessions. Sign in again with the new password.');
    case 'token':
      return new AppError('UNAUTHENTICATED', 'The API token this connection was opened with was revoked. Sign in again with `den login`.');
    case 'session':
      return new AppError('UNAUTHENTICATED', 'You signed out, so den closed this connection. Sign in again to reconnect.');
    case 'ssh-key':
      return new AppError('UNAUTHENTICATED', 'The SSH key this connection was opened with was removed from your account, so den closed it. Add a key with `den keys add` and connect again.');
    case 'role':
      return new AppError('FORBIDDEN', `Your role changed to ${revocation.role}, which has no access to workspace '${workspaceLabel}'. Ask an owner of this den server if you still need it.`);
  }
}
