import { EventEmitter } from 'node:events';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import type { BuildLogEntry, BuildLogSink } from './log-sink.ts';

export interface BuildLogRow {
  id: number;
  ts: string;
  stream: 'system' | 'stdout' | 'stderr';
  step: string | null;
  line: string;
}

export interface BuildLogs extends BuildLogSink {
  /** Lines after `afterId`, oldest first. */
  read(buildId: string, afterId?: number, limit?: number): Promise<BuildLogRow[]>;
  /**
   * Every line after `afterId`, then live lines as they arrive, ending once the build has
   * finished and everything is read. Works across replicas: lines written here wake the reader
   * at once, lines written by another replica are found by polling the store.
   */
  follow(buildId: string, afterId?: number, options?: { signal?: AbortSignal }): AsyncIterable<BuildLogRow>;
  /** Resolves when every appended line is in the store. */
  flush(): Promise<void>;
  /** Wakes this process's followers of `buildId` (its state changed). */
  notify(buildId: string): void;
}

const MAX_LINE = 16 * 1024;
const POLL_MS = 1_000;
const BATCH = 500;

/** The build log: appends are buffered and written in batches, so a chatty script costs few writes. */
export function createBuildLogs(db: Kysely<Database>, clock: Clock, onError: (error: unknown) => void): BuildLogs {
  let pending: { build_id: string; ts: string; stream: string; step: string | null; line: string }[] = [];
  let writing: Promise<void> = Promise.resolve();
  let scheduled = false;
  const written = new EventEmitter();
  written.setMaxListeners(0);

  function schedule(): void {
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      writing = writing.then(writeBatch);
    });
  }

  async function writeBatch(): Promise<void> {
    while (pending.length > 0) {
      const batch = pending.splice(0, BATCH);
      try {
        await db.insertInto('build_logs').values(batch).execute();
      } catch (error) {
        onError(error);
      }
      for (const buildId of new Set(batch.map((row) => row.build_id))) written.emit(buildId);
    }
  }

  const logs: BuildLogs = {
    append(buildId: string, entry: BuildLogEntry) {
      const line = entry.line.length > MAX_LINE ? `${entry.line.slice(0, MAX_LINE)}…` : entry.line;
      pending.push({ build_id: buildId, ts: iso(clock.now()), stream: entry.stream, step: entry.step ?? null, line });
      schedule();
    },

    async read(buildId, afterId = 0, limit = 10_000) {
      const rows = await db
        .selectFrom('build_logs')
        .select(['id', 'ts', 'stream', 'step', 'line'])
        .where('build_id', '=', buildId)
        .where('id', '>', afterId)
        .orderBy('id')
        .limit(limit)
        .execute();
      return rows.map((row) => ({ ...row, id: Number(row.id), stream: row.stream as BuildLogRow['stream'] }));
    },

    async *follow(buildId, afterId = 0, options = {}) {
      let cursor = afterId;
      while (!options.signal?.aborted) {
        // Read the state before the lines: a build that is finished now has all its lines stored.
        const build = await db.selectFrom('builds').select('state').where('id', '=', buildId).executeTakeFirst();
        const finished = !build || (build.state !== 'queued' && build.state !== 'running');
        for (;;) {
          const rows = await logs.read(buildId, cursor, BATCH);
          for (const row of rows) {
            cursor = row.id;
            yield row;
          }
          if (rows.length < BATCH) break;
        }
        if (finished) return;
        await waitForLines(written, buildId, POLL_MS, options.signal);
      }
    },

    notify(buildId) {
      written.emit(buildId);
    },

    async flush() {
      if (scheduled || pending.length > 0) {
        scheduled = false;
        writing = writing.then(writeBatch);
      }
      await writing;
    },
  };
  return logs;
}

function waitForLines(emitter: EventEmitter, buildId: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      emitter.off(buildId, done);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    emitter.on(buildId, done);
    signal?.addEventListener('abort', done, { once: true });
  });
}
