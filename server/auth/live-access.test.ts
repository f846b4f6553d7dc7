import { describe, expect, it } from 'vitest';
import type { AppError } from '../../protocol/errors.ts';
import { createLiveAccess, type HeldAccess } from './live-access.ts';
import { createLocalRevocationBus } from './revocations.ts';

/** The registry alone: which revocation ends which connection, and the race with authentication. */

function setup() {
  const bus = createLocalRevocationBus();
  const live = createLiveAccess(bus);
  const open = (access: Partial<HeldAccess> & { userId: string }, since = live.mark()) => {
    const connection = { ended: undefined as AppError | undefined, untrack: () => {} };
    connection.untrack = live.track(
      { workspace: { label: 'alice/dev', allows: ({ userId, role }) => role === 'owner' || userId === 'alice' }, since, ...access },
      (error) => {
        if (connection.ended) throw new Error('ended twice');
        connection.ended = error;
      },
    );
    return connection;
  };
  return { bus, live, open };
}

describe('live access', () => {
  it('ends the connections a revocation matches, with its coded error, and no others', () => {
    const { bus, live, open } = setup();
    const byToken = open({ userId: 'alice', tokenId: 't1' });
    const byOtherToken = open({ userId: 'alice', tokenId: 't2' });
    const bySession = open({ userId: 'alice', sessionIdHash: 's1' });
    const otherUser = open({ userId: 'bob', tokenId: 't3' });

    bus.publish({ kind: 'token', userId: 'alice', tokenId: 't1' });
    expect(byToken.ended).toMatchObject({ code: 'UNAUTHENTICATED' });
    expect([byOtherToken.ended, bySession.ended, otherUser.ended]).toEqual([undefined, undefined, undefined]);

    bus.publish({ kind: 'sessions', userId: 'alice', reason: 'password-changed' });
    expect(bySession.ended).toMatchObject({ code: 'UNAUTHENTICATED' });
    expect(byOtherToken.ended).toBeUndefined();

    bus.publish({ kind: 'user', userId: 'alice', reason: 'suspended' });
    expect(byOtherToken.ended).toMatchObject({ code: 'USER_SUSPENDED' });
    expect(byOtherToken.ended!.message).toMatch(/suspended.*\.$/);
    expect(otherUser.ended).toBeUndefined();
    expect(live.size).toBe(1);
  });

  it('ends on an SSH key\'s removal only the connections that key opened', () => {
    const { bus, open } = setup();
    const byKey = open({ userId: 'alice', sshKeyId: 'k1' });
    const byOtherKey = open({ userId: 'alice', sshKeyId: 'k2' });
    const byToken = open({ userId: 'alice', tokenId: 't1' });
    bus.publish({ kind: 'ssh-key', userId: 'alice', keyId: 'k1' });
    expect(byKey.ended).toMatchObject({ code: 'UNAUTHENTICATED', message: expect.stringContaining('SSH key') });
    expect([byOtherKey.ended, byToken.ended]).toEqual([undefined, undefined]);
  });

  it('ends on a role change only what the new role no longer reaches', () => {
    const { bus, open } = setup();
    const ownWorkspace = open({ userId: 'alice', tokenId: 't1' });
    const othersWorkspace = open({ userId: 'carol', tokenId: 't2' });
    bus.publish({ kind: 'role', userId: 'alice', role: 'member' });
    bus.publish({ kind: 'role', userId: 'carol', role: 'owner' });
    expect([ownWorkspace.ended, othersWorkspace.ended]).toEqual([undefined, undefined]);
    bus.publish({ kind: 'role', userId: 'carol', role: 'template-admin' });
    expect(othersWorkspace.ended).toMatchObject({ code: 'FORBIDDEN' });
    expect(othersWorkspace.ended!.message).toContain("'alice/dev'");
  });

  it('ends at once a connection whose authentication began before a revocation that matches it', () => {
    const { bus, open, live } = setup();
    const before = live.mark();
    bus.publish({ kind: 'session', userId: 'alice', idHash: 's1' });
    const stale = open({ userId: 'alice', sessionIdHash: 's1' }, before);
    const otherSession = open({ userId: 'alice', sessionIdHash: 's2' }, before);
    const fresh = open({ userId: 'alice', sessionIdHash: 's1' });
    expect(stale.ended).toMatchObject({ code: 'UNAUTHENTICATED' });
    expect([otherSession.ended, fresh.ended]).toEqual([undefined, undefined]);
    expect(live.size).toBe(2);
  });

  it('ends a connection whose authentication is older than the revocations it remembers', () => {
    const { bus, open, live } = setup();
    const before = live.mark();
    for (let i = 0; i < 2_000; i++) bus.publish({ kind: 'token', userId: 'someone', tokenId: `t${i}` });
    expect(open({ userId: 'alice', tokenId: 't1' }, before).ended).toMatchObject({ code: 'UNAUTHENTICATED' });
    expect(open({ userId: 'alice', tokenId: 't1' }).ended).toBeUndefined();
  });

  it('forgets a connection once it is untracked, and keeps telling the other listeners when one fails', () => {
    const { bus, open, live } = setup();
    const closed = open({ userId: 'alice', tokenId: 't1' });
    closed.untrack();
    const heard: string[] = [];
    bus.subscribe(() => {
      throw new Error('a broken listener');
    });
    bus.subscribe((revocation) => heard.push(revocation.kind));
    bus.publish({ kind: 'user', userId: 'alice', reason: 'deleted' });
    expect(closed.ended).toBeUndefined();
    expect(heard).toEqual(['user']);
    expect(live.size).toBe(0);
    live.close();
  });
});
