import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { storeDialects } from '../../test/support/postgres.ts';
import { openTestStore } from '../../test/support/test-store.ts';
import { idleDriver } from '../../test/support/idle-driver.ts';
import { seedWorkspace } from '../../test/support/workspace-seed.ts';
import type { RuntimeDriver, RuntimeEvent } from '../runtimes/driver.ts';
import type { Store } from '../store/connect.ts';
import { holdLease } from '../store/leases.ts';
import { listWorkspaceEvents } from '../workspaces/events.ts';
import { createReconciler } from './reconciler.ts';

const log = pino({ level: 'silent' });
const GRACE_MS = 15_000;

describe.each(storeDialects)('reconciler on %s', (dialect) => {
  let store: Store;
  let close: () => Promise<void>;
  let now: Date;
  const clock = { now: () => now };

  beforeEach(async () => {
    ({ store, close } = await openTestStore(dialect));
    now = new Date('2026-12-06T12:00:00.000Z');
  });
  afterEach(() => close());

  /** a driver whose observed events the test emits */
  function observedDriver(): { driver: RuntimeDriver; emit(event: RuntimeEvent): void } {
    let listener: ((event: RuntimeEvent) => void) | undefined;
    return {
      driver: { ...idleDriver, observe: (onEvent) => { listener = onEvent; return () => { listener = undefined; }; } },
      emit: (event) => listener?.(event),
    };
  }

  it('lets one owner hold a lease until it expires, then another takes it over', async () => {
    expect(await holdLease(store.db, 'job', 'a', now, 3_000)).toBe(true);
    expect(await holdLease(store.db, 'job', 'b', now, 3_000)).toBe(false);
    expect(await holdLease(store.db, 'job', 'a', new Date(now.getTime() + 2_000), 3_000)).toBe(true);
    expect(await holdLease(store.db, 'job', 'b', new Date(now.getTime() + 4_999), 3_000)).toBe(false);
    expect(await holdLease(store.db, 'job', 'b', new Date(now.getTime() + 5_000), 3_000)).toBe(true);
    expect(await holdLease(store.db, 'job', 'a', new Date(now.getTime() + 5_000), 3_000)).toBe(false);
  });

  it('shows a running workspace down once its agent stayed disconnected past the grace period, once', async () => {
    const { workspaceId } = await seedWorkspace(store.db, { username: 'alice', workspaceName: 'demo' });
    await store.db.insertInto('agents').values({ workspace_id: workspaceId, name: 'main', state: 'ready', revision: null, connected_at: null, disconnected_at: now.toISOString() }).execute();
    const reconciler = createReconciler({ store, clock, log, driver: idleDriver, agentGraceMs: GRACE_MS });

    now = new Date(now.getTime() + GRACE_MS - 1);
    await reconciler.tick();
    expect((await health(workspaceId)).health).toBeNull();

    now = new Date(now.getTime() + 1);
    await reconciler.tick();
    await reconciler.tick();
    expect(await health(workspaceId)).toEqual({
      health: 'down',
      health_message: 'The agent of workspace \'alice/demo\' lost its connection at 12:00:00 UTC and has not come back within 15 s.',
      health_at: now.toISOString(),
    });
    const events = await listWorkspaceEvents(store.db, workspaceId);
    expect(events.map((e) => e.kind)).toEqual(['agent_lost']);
    await reconciler.stop();
  });

  it('acts on runtime events only on the replica that holds the lease, and only for running workspaces', async () => {
    const running = await seedWorkspace(store.db, { username: 'alice', workspaceName: 'demo' });
    const stopping = await seedWorkspace(store.db, { username: 'bob', workspaceName: 'demo' });
    await store.db.updateTable('workspaces').set({ status: 'stopping' }).where('id', '=', stopping.workspaceId).execute();
    const leader = observedDriver();
    const follower = observedDriver();
    const first = createReconciler({ store, clock, log, driver: leader.driver });
    const second = createReconciler({ store, clock, log, driver: follower.driver });
    await first.tick();
    first.start();
    second.start();
    const died = (workspaceId: string): RuntimeEvent => ({
      workspaceId, kind: 'oom_killed', subject: { type: 'workspace' }, cause: '', at: now, detail: { exitCode: 137 },
    });
    follower.emit(died(running.workspaceId));
    await second.tick();
    expect((await health(running.workspaceId)).health).toBeNull();

    leader.emit(died(running.workspaceId));
    leader.emit(died(stopping.workspaceId));
    await first.tick();
    await first.tick();
    expect((await health(running.workspaceId)).health_message)
      .toBe('The container of workspace \'alice/demo\' was killed at 12:00:00 UTC because it ran out of memory (OOM).');
    expect((await listWorkspaceEvents(store.db, running.workspaceId))[0]).toMatchObject({ kind: 'workspace_oom_killed', detail: { exitCode: 137 } });
    expect((await health(stopping.workspaceId)).health).toBeNull();
    await first.stop();
    await second.stop();
  });

  async function health(workspaceId: string) {
    return store.db.selectFrom('workspaces').select(['health', 'health_message', 'health_at']).where('id', '=', workspaceId).executeTakeFirstOrThrow();
  }
});
