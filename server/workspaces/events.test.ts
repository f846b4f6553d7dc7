import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { workspaceEventListSchema } from '../../protocol/workspaces.ts';
import { storeDialects } from '../../test/support/postgres.ts';
import { openTestStore } from '../../test/support/test-store.ts';
import { seedWorkspace } from '../../test/support/workspace-seed.ts';
import type { Store } from '../store/connect.ts';
import { KEEP_EVENTS, listWorkspaceEvents, recordWorkspaceEvent } from './events.ts';

describe.each(storeDialects)('workspace events on %s', (dialect) => {
  let store: Store;
  let close: () => Promise<void>;

  beforeEach(async () => {
    ({ store, close } = await openTestStore(dialect));
  });
  afterEach(() => close());

  it('lists a workspace\'s events newest first, with their detail, and keeps only its newest ones', async () => {
    const mine = await seedWorkspace(store.db, { username: 'alice', workspaceName: 'demo' });
    const other = await seedWorkspace(store.db, { username: 'bob', workspaceName: 'demo' });
    await recordWorkspaceEvent(store.db, new Date(), { workspaceId: other.workspaceId, kind: 'k', message: 'Of bob.' });
    for (let i = 0; i < KEEP_EVENTS + 5; i++) {
      await recordWorkspaceEvent(store.db, new Date(), { workspaceId: mine.workspaceId, kind: 'k', message: `Event ${i}.`, detail: { i } });
    }
    const events = await listWorkspaceEvents(store.db, mine.workspaceId);
    expect(workspaceEventListSchema.parse({ events }).events).toHaveLength(KEEP_EVENTS);
    expect(events[0]).toMatchObject({ kind: 'k', message: `Event ${KEEP_EVENTS + 4}.`, detail: { i: KEEP_EVENTS + 4 } });
    expect(events.at(-1)!.message).toBe('Event 5.');
    // another workspace's events are its own, and not trimmed by these
    expect((await listWorkspaceEvents(store.db, other.workspaceId)).map((e) => e.message)).toEqual(['Of bob.']);
  });
});
