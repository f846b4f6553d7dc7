import { AppError } from '../../protocol/errors.ts';
import type { Role } from '../store/schema.ts';
import { revocationError, type Revocation, type RevocationBus } from './revocations.ts';

/**
 * The long-lived connections of this process (terminal and exec websockets, streamed log
 * follows), each with the principal and credential that opened it. A revocation on the bus ends
 * the matching ones at once: authentication happens when a connection opens, so without this a
 * terminal opened before a suspension would keep running commands.
 */

/** The workspace a connection reaches, as far as revocations care. */
export interface TrackedWorkspace {
  /** "owner/name", for messages */
  label: string;
  /** whether a user with this role may still reach it (decides role changes) */
  allows(principal: { userId: string; role: Role }): boolean;
}

/** Who holds a connection, as authenticated when it opened, and what it reaches. */
export interface HeldAccess {
  userId: string;
  /** the API token that authenticated the request, if one did */
  tokenId?: string;
  /** the cookie session that authenticated the request (sha256 of the cookie), if one did */
  sessionIdHash?: string;
  /** the SSH key that authenticated the connection (the gateway's), if one did */
  sshKeyId?: string;
  workspace: TrackedWorkspace;
  /** `mark()` taken before the request was authenticated */
  since: number;
}

export interface LiveAccess {
  /**
   * A mark to take before authenticating a request. `track` ends a connection at once when a
   * revocation that matches it was published after its mark: the authentication may have read
   * the store before that change was committed.
   */
  mark(): number;
  /**
   * Tracks a connection until the returned function is called (when it closes). `end` runs at
   * most once, with the coded error to give the client, when a revocation ends the access; it
   * may run before `track` returns.
   */
  track(access: HeldAccess, end: (error: AppError) => void): () => void;
  /** how many connections are tracked (for tests and metrics) */
  readonly size: number;
  /** Stops listening to the bus. */
  close(): void;
}

/**
 * Revocations kept to check connections whose authentication began before them. Between the
 * authentication and the `track` of a websocket or stream lie one or two store reads, so this
 * many revocations in that time means something else is wrong; such a connection is ended too.
 */
const HISTORY_LENGTH = 1024;

export function createLiveAccess(bus: RevocationBus): LiveAccess {
  const connections = new Set<{ access: HeldAccess; end: (error: AppError) => void }>();
  const history: Array<{ sequence: number; revocation: Revocation }> = [];
  let sequence = 0;

  const unsubscribe = bus.subscribe((revocation) => {
    sequence++;
    history.push({ sequence, revocation });
    if (history.length > HISTORY_LENGTH) history.shift();
    for (const connection of connections) {
      if (!ends(revocation, connection.access)) continue;
      connections.delete(connection);
      connection.end(revocationError(revocation, connection.access.workspace.label));
    }
  });

  return {
    mark: () => sequence,
    track(access, end) {
      if (history.length > 0 && history[0].sequence > access.since + 1) {
        end(new AppError('UNAUTHENTICATED', 'den could not confirm that your sign-in is still valid while this connection opened. Open it again.'));
        return () => {};
      }
      const missed = history.find((entry) => entry.sequence > access.since && ends(entry.revocation, access));
      if (missed) {
        end(revocationError(missed.revocation, access.workspace.label));
        return () => {};
      }
      const connection = { access, end };
      connections.add(connection);
      return () => connections.delete(connection);
    },
    get size() {
      return connections.size;
    },
    close: unsubscribe,
  };
}

/** Whether a revocation ends a connection held with this access. */
function ends(revocation: Revocation, access: HeldAccess): boolean {
  if (revocation.userId !== access.userId) return false;
  switch (revocation.kind) {
    case 'user':
      return true;
    case 'sessions':
      return access.sessionIdHash !== undefined;
    case 'token':
      return access.tokenId === revocation.tokenId;
    case 'session':
      return access.sessionIdHash === revocation.idHash;
    case 'ssh-key':
      return access.sshKeyId === revocation.keyId;
    case 'role':
      return !access.workspace.allows({ userId: revocation.userId, role: revocation.role });
  }
}
