import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openStore, type Store } from '../store/connect.ts';
import { iso, systemClock } from '../store/time.ts';
import { createTestDatabase, storeDialects } from '../../test/support/postgres.ts';
import { LOG_CAP_STEP, type BuildLogLimits } from './log-cap.ts';
import { createBuildLogs, type BuildLogRow } from './logs.ts';

const FOLLOW_TIMEOUT_MS = 10_000;

describe.each(storeDialects)('build logs on %s', (dialect) => {
  let store: Store;
  let other: Store;
  let cleanup: () => Promise<void>;
  let buildId: string;

  beforeEach(async () => {
    // Two stores over one database: two replicas, each with its own log writer and followers.
    if (dialect === 'postgres') {
      const pg = await createTestDatabase();
      store = await openStore({ databaseUrl: pg.url });
      other = await openStore({ databaseUrl: pg.url });
      cleanup = async () => { await store.close(); await other.close(); await pg.drop(); };
    } else {
      const dir = mkdtempSync(join(tmpdir(), 'den-logs-'));
      store = await openStore({ dataDir: dir });
      other = await openStore({ dataDir: dir });
      cleanup = async () => { await store.close(); await other.close(); rmSync(dir, { recursive: true, force: true }); };
    }
    buildId = await seedBuild(store);
  });
  afterEach(() => cleanup());

  it('keeps lines in order and reads them after a cursor', async () => {
    const logs = createBuildLogs(store.db, systemClock, (error) => { throw error; });
    for (let i = 0; i < 1200; i++) logs.append(buildId, { stream: i % 2 ? 'stdout' : 'system', step: 'apply', line: `line ${i}` });
    await logs.flush();
    const all = await logs.read(buildId);
    expect(all.map((row) => row.line)).toEqual(Array.from({ length: 1200 }, (_, i) => `line ${i}`));
    const after = await logs.read(buildId, all[1099].id);
    expect(after.map((row) => row.line)).toEqual(Array.from({ length: 100 }, (_, i) => `line ${1100 + i}`));
  });

  it('follows live lines written by another replica and ends when the build finishes', async () => {
    const writer = createBuildLogs(other.db, systemClock, (error) => { throw error; });
    const reader = createBuildLogs(store.db, systemClock, (error) => { throw error; });
    writer.append(buildId, { stream: 'system', line: 'before' });
    await writer.flush();

    const seen: BuildLogRow[] = [];
    const following = (async () => {
      for await (const row of reader.follow(buildId)) seen.push(row);
    })();
    await waitFor(() => seen.length === 1);
    writer.append(buildId, { stream: 'stdout', step: 'agent', line: 'during' });
    await writer.flush();
    await waitFor(() => seen.length === 2);
    await other.db.updateTable('builds').set({ state: 'succeeded' }).where('id', '=', buildId).execute();
    await following;
    expect(seen.map((row) => [row.stream, row.step, row.line])).toEqual([['system', null, 'before'], ['stdout', 'agent', 'during']]);
  });

  const small: BuildLogLimits = { headLines: 5, headBytes: 1000, tailLines: 4, tailBytes: 1000, keepBuilds: 2 };

  it('keeps the head and the tail of a long log and marks the cut with what was dropped', async () => {
    const logs = createBuildLogs(store.db, systemClock, (error) => { throw error; }, small);
    // Flushing every few lines moves the tail window across many batches, not within one.
    for (let i = 0; i < 100; i++) {
      logs.append(buildId, { stream: 'stdout', step: 'script', line: `line ${i}` });
      if (i % 7 === 0) await logs.flush();
    }
    await logs.flush();
    const rows = await logs.read(buildId);
    const dropped = Array.from({ length: 91 }, (_, i) => `line ${i + 5}`);
    expect(rows.map((row) => row.line)).toEqual([
      'line 0', 'line 1', 'line 2', 'line 3', 'line 4',
      expect.stringMatching(new RegExp(`^den cut 91 lines \\(${Buffer.byteLength(dropped.join(''))} bytes\\) here: a build log keeps its first 5 lines`)),
      'line 96', 'line 97', 'line 98', 'line 99',
    ]);
    expect(rows[5]).toMatchObject({ stream: 'system', step: LOG_CAP_STEP });
  });

  it('counts lines cut while they waited for the store where they were, between the stored tail and the newest lines', async () => {
    const logs = createBuildLogs(store.db, systemClock, (error) => { throw error; }, small);
    for (let i = 0; i < 8; i++) logs.append(buildId, { stream: 'stdout', line: `line ${i}` });
    await logs.flush();
    // The head is full and known: of these, all but the last window's worth are cut before any write.
    for (let i = 8; i < 1000; i++) logs.append(buildId, { stream: 'stdout', line: `line ${i}` });
    await logs.flush();
    const rows = await logs.read(buildId);
    expect(rows.map((row) => row.line)).toEqual([
      'line 0', 'line 1', 'line 2', 'line 3', 'line 4',
      expect.stringMatching(/^den cut 991 lines \(\d+ bytes\) here/),
      'line 996', 'line 997', 'line 998', 'line 999',
    ]);
  });

  it('follows a capped log live: the head, lines as they come, the last line, then the end of the build', async () => {
    const writer = createBuildLogs(store.db, systemClock, (error) => { throw error; }, small);
    const reader = createBuildLogs(store.db, systemClock, (error) => { throw error; }, small);
    const seen: BuildLogRow[] = [];
    const following = (async () => {
      for await (const row of reader.follow(buildId)) seen.push(row);
    })();
    for (let i = 0; i < 300; i++) {
      writer.append(buildId, { stream: 'stdout', line: `line ${i}` });
      if (i % 50 === 0) await writer.flush();
    }
    await writer.flush();
    await store.db.updateTable('builds').set({ state: 'succeeded' }).where('id', '=', buildId).execute();
    reader.notify(buildId);
    await following;
    const lines = seen.map((row) => row.line);
    expect(lines.slice(0, 5)).toEqual(['line 0', 'line 1', 'line 2', 'line 3', 'line 4']);
    expect(lines.at(-1)).toBe('line 299');
    expect(seen.map((row) => row.id)).toEqual([...seen.map((row) => row.id)].sort((a, b) => a - b));
  });

  it('caps by bytes as well as lines, and a new writer continues the counts it finds in the store', async () => {
    const big = 'x'.repeat(300);
    const first = createBuildLogs(store.db, systemClock, (error) => { throw error; }, small);
    for (let i = 0; i < 10; i++) first.append(buildId, { stream: 'stdout', line: `${i}${big}` });
    await first.flush();
    // A restarted server (or another replica) picks the build up where the store says it is.
    const second = createBuildLogs(store.db, systemClock, (error) => { throw error; }, small);
    for (let i = 10; i < 20; i++) second.append(buildId, { stream: 'stdout', line: `${i}${big}` });
    await second.flush();
    const rows = await second.read(buildId);
    // 301-byte lines: 3 fit the 1000-byte head, 3 the tail; 20 - 6 = 14 were cut.
    expect(rows.map((row) => row.line.slice(0, 2))).toEqual(['0x', '1x', '2x', 'de', '17', '18', '19']);
    expect(rows[3].line).toMatch(/^den cut 14 lines \(4\d{3} bytes\) here/);
    expect(rows.filter((row) => row.step === LOG_CAP_STEP)).toHaveLength(1);
  });

  it('keeps the logs of the newest builds of a workspace and replaces older ones with a note', async () => {
    const logs = createBuildLogs(store.db, systemClock, (error) => { throw error; }, small);
    logs.append(buildId, { stream: 'stdout', line: 'of build 1' });
    await logs.flush();
    const second = await seedNextBuild(store, buildId, 2);
    logs.append(second, { stream: 'stdout', line: 'of build 2' });
    await logs.flush();
    expect((await logs.read(buildId)).map((row) => row.line)).toEqual(['of build 1']);
    const third = await seedNextBuild(store, buildId, 3);
    logs.append(third, { stream: 'stdout', line: 'of build 3' });
    await logs.flush();
    expect((await logs.read(buildId)).map((row) => row.line)).toEqual([expect.stringContaining('keeps the logs of its newest 2 builds')]);
    expect((await logs.read(second)).map((row) => row.line)).toEqual(['of build 2']);
  });

  it('ends a follow when the caller aborts', async () => {
    const logs = createBuildLogs(store.db, systemClock, (error) => { throw error; });
    const abort = new AbortController();
    const following = (async () => {
      for await (const _ of logs.follow(buildId, 0, { signal: abort.signal })) { /* none */ }
    })();
    abort.abort();
    await following;
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + FOLLOW_TIMEOUT_MS;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${FOLLOW_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Another build of the workspace of `buildId`, with the given number. */
async function seedNextBuild(store: Store, buildId: string, number: number): Promise<string> {
  const build = await store.db.selectFrom('builds').selectAll().where('id', '=', buildId).executeTakeFirstOrThrow();
  const id = randomUUID();
  await store.db.insertInto('builds').values({ ...build, id, number }).execute();
  return id;
}

async function seedBuild(store: Store): Promise<string> {
  const now = iso(new Date());
  const ids = { user: randomUUID(), template: randomUUID(), version: randomUUID(), workspace: randomUUID(), build: randomUUID() };
  await store.db.insertInto('users').values({ id: ids.user, username: 'u', display_name: 'U', role: 'member', password_hash: null, suspended: 0, created_at: now, updated_at: now }).execute();
  await store.db.insertInto('templates').values({ id: ids.template, name: 't', display_name: 't', description: '', icon: null, active_version_id: ids.version, created_by: ids.user, created_at: now, updated_at: now }).execute();
  await store.db.insertInto('template_versions').values({ id: ids.version, template_id: ids.template, number: 1, spec_json: '{}', files_json: '{}', message: '', created_by: ids.user, created_at: now }).execute();
  await store.db.insertInto('workspaces').values({
    id: ids.workspace, name: 'w', owner_id: ids.user, template_id: ids.template, template_version_id: ids.version, params_json: '{}',
    status: 'starting', last_build_id: ids.build, created_at: now, updated_at: now, deleted_at: null,
  }).execute();
  await store.db.insertInto('builds').values({
    id: ids.build, workspace_id: ids.workspace, number: 1, transition: 'start', reason: 'create', initiator_id: ids.user,
    template_version_id: ids.version, params_json: '{}', state: 'running', error: null, steps_json: '[]',
    lease_owner: 'x', lease_expires_at: now, attempts: 1, created_at: now, started_at: now, finished_at: null,
  }).execute();
  return ids.build;
}
