import { EventEmitter } from 'node:events';
import { sql, type Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import {
  cutMarkerLine, DEFAULT_BUILD_LOG_LIMITS, LOG_CAP_STEP, retentionNote, splitHead, tailOverflow, usageOfRows,
  type BuildLogLimits, type BuildLogUsage,
} from './log-cap.ts';
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
/** builds whose log usage this process remembers; a forgotten one is read back from the store */
const USAGE_CACHE = 100;

type PendingRow = { build_id: string; ts: string; stream: string; step: string | null; line: string };

/** A build's lines not yet written, and the ones already cut from them (see `append`). */
interface PendingLines {
  rows: { row: PendingRow; bytes: number }[];
  bytes: number;
  cut: { lines: number; bytes: number };
}

/**
 * The build log: appends are buffered and written in batches, so a chatty script costs few
 * writes, and each build's stored log is capped (head, cut marker, rolling tail: see log-cap.ts).
 */
export function createBuildLogs(
  db: Kysely<Database>,
  clock: Clock,
  onError: (error: unknown) => void,
  limits: BuildLogLimits = DEFAULT_BUILD_LOG_LIMITS,
): BuildLogs {
  const pending = new Map<string, PendingLines>();
  const usages = new Map<string, BuildLogUsage>();
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
    while (pending.size > 0) {
      for (const [buildId, lines] of pending) {
        // Lines cut while waiting are older than every line still waiting: they go together,
        // so the cut is counted where it happened (see writeCapped).
        const taken = lines.rows.splice(0, lines.cut.lines > 0 ? lines.rows.length : BATCH);
        const cut = lines.cut;
        lines.cut = { lines: 0, bytes: 0 };
        lines.bytes -= taken.reduce((sum, entry) => sum + entry.bytes, 0);
        if (lines.rows.length === 0) pending.delete(buildId);
        try {
          await writeCapped(buildId, taken.map((entry) => entry.row), cut);
        } catch (error) {
          // the usage may no longer match the store: read it back on the next write
          usages.delete(buildId);
          onError(error);
        }
        written.emit(buildId);
      }
    }
  }

  /**
   * Stores the rows that fit the head, then the tail, cutting what the tail window no longer
   * holds. `waitCut` counts lines cut before they were written, which came after the stored ones
   * and before `rows`: it stands in the window as one entry that never fits, so the stored tail
   * goes with it and the marker stays in order.
   */
  async function writeCapped(buildId: string, rows: PendingRow[], waitCut: { lines: number; bytes: number }): Promise<void> {
    const usage = await usageOf(buildId);
    const { head, tail } = splitHead(usage, rows, limits);
    if (head.length > 0) await db.insertInto('build_logs').values(head).execute();
    if (tail.length === 0 && waitCut.lines === 0) return;
    const gap = waitCut.lines > 0 ? [Number.POSITIVE_INFINITY] : [];
    const drop = tailOverflow([...usage.tail.map((entry) => entry.bytes), ...gap, ...tail.map((entry) => entry.bytes)], limits);
    const storedDropped = usage.tail.slice(0, drop);
    const newDropped = tail.slice(0, Math.max(0, drop - usage.tail.length - gap.length));
    if (drop > 0) {
      const newBytes = newDropped.reduce((sum, entry) => sum + entry.bytes, waitCut.bytes);
      await cut(buildId, usage, storedDropped, newBytes, newDropped.length + waitCut.lines);
    }
    usage.tail = usage.tail.slice(storedDropped.length);
    const kept = tail.slice(newDropped.length);
    if (kept.length === 0) return;
    const ids = await db.insertInto('build_logs').values(kept.map((entry) => entry.row)).returning('id').execute();
    ids.forEach((row, i) => usage.tail.push({ id: Number(row.id), bytes: kept[i].bytes }));
  }

  /**
   * Deletes the dropped stored rows and counts them, with the dropped new ones, in the marker.
   * The marker takes the place of the newest dropped stored row (or is a new row when none was
   * stored yet), so it always sits between the head and the kept tail.
   */
  async function cut(buildId: string, usage: BuildLogUsage, stored: { id: number; bytes: number }[], newBytes: number, newLines: number): Promise<void> {
    const lines = stored.length + newLines;
    const bytes = stored.reduce((sum, entry) => sum + entry.bytes, newBytes);
    const inBuild = db.deleteFrom('build_logs').where('build_id', '=', buildId);
    if (usage.marker) {
      if (stored.length > 0) await inBuild.where('id', '>', usage.marker.id).where('id', '<=', stored.at(-1)!.id).execute();
      usage.marker.lines += lines;
      usage.marker.bytes += bytes;
    } else if (stored.length > 0) {
      const id = stored.at(-1)!.id;
      await inBuild.where('id', '>=', stored[0].id).where('id', '<', id).execute();
      usage.marker = { id, lines, bytes };
    } else {
      const row = await db.insertInto('build_logs')
        .values({ build_id: buildId, ts: iso(clock.now()), stream: 'system', step: LOG_CAP_STEP, line: cutMarkerLine(limits, lines, bytes) })
        .returning('id').executeTakeFirstOrThrow();
      usage.marker = { id: Number(row.id), lines, bytes };
      return;
    }
    await db.updateTable('build_logs')
      .set({ stream: 'system', step: LOG_CAP_STEP, line: cutMarkerLine(limits, usage.marker.lines, usage.marker.bytes) })
      .where('id', '=', usage.marker.id)
      .execute();
  }

  /** The build's usage, read from the store when this process first writes to it (which also prunes older builds). */
  async function usageOf(buildId: string): Promise<BuildLogUsage> {
    let usage = usages.get(buildId);
    if (usage) {
      // most recently used last, so the first key is the one to forget
      usages.delete(buildId);
      usages.set(buildId, usage);
      return usage;
    }
    // Sizes, not text: a build written before the cap existed may hold far more than it keeps.
    // (octet_length: PostgreSQL, and SQLite since 3.43.)
    const rows = await db.selectFrom('build_logs')
      .select(['id', 'step', sql<number>`octet_length(line)`.as('bytes')])
      .select((eb) => eb.case().when('step', '=', LOG_CAP_STEP).then(eb.ref('line')).else(null).end().as('line'))
      .where('build_id', '=', buildId).orderBy('id').execute();
    usage = usageOfRows(rows.map((row) => ({ ...row, id: Number(row.id), bytes: Number(row.bytes) })), limits);
    if (usages.size >= USAGE_CACHE) usages.delete(usages.keys().next().value!);
    usages.set(buildId, usage);
    await pruneOlderBuilds(buildId);
    return usage;
  }

  /** Replaces the logs of the workspace's builds older than its newest `keepBuilds` with a note. */
  async function pruneOlderBuilds(buildId: string): Promise<void> {
    const build = await db.selectFrom('builds').select('workspace_id').where('id', '=', buildId).executeTakeFirst();
    if (!build) return;
    // LIMIT is required before OFFSET on SQLite; no workspace has a million builds.
    const older = db.selectFrom('builds').select('id').where('workspace_id', '=', build.workspace_id)
      .orderBy('number', 'desc').limit(1_000_000).offset(limits.keepBuilds);
    const withLines = await db.selectFrom('build_logs').select('build_id').distinct()
      .where('build_id', 'in', older)
      .where((eb) => eb.or([eb('step', 'is', null), eb('step', '<>', LOG_CAP_STEP)]))
      .execute();
    for (const { build_id: id } of withLines) {
      await db.deleteFrom('build_logs').where('build_id', '=', id).execute();
      await db.insertInto('build_logs')
        .values({ build_id: id, ts: iso(clock.now()), stream: 'system', step: LOG_CAP_STEP, line: retentionNote(limits) })
        .execute();
      usages.delete(id);
    }
  }

  const logs: BuildLogs = {
    append(buildId: string, entry: BuildLogEntry) {
      const line = entry.line.length > MAX_LINE ? `${entry.line.slice(0, MAX_LINE)}…` : entry.line;
      let lines = pending.get(buildId);
      if (!lines) pending.set(buildId, (lines = { rows: [], bytes: 0, cut: { lines: 0, bytes: 0 } }));
      const bytes = Buffer.byteLength(line);
      lines.rows.push({ row: { build_id: buildId, ts: iso(clock.now()), stream: entry.stream, step: entry.step ?? null, line }, bytes });
      lines.bytes += bytes;
      // Once the head is full, a waiting line with a full tail window of lines after it can only
      // be cut: it is counted now instead of held, so a source that writes faster than the store
      // keeps at most one tail window of lines in memory.
      if (usages.get(buildId)?.headFull) {
        while (lines.rows.length > limits.tailLines || lines.bytes > limits.tailBytes) {
          const oldest = lines.rows.shift()!;
          lines.bytes -= oldest.bytes;
          lines.cut.lines++;
          lines.cut.bytes += oldest.bytes;
        }
      }
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
      if (scheduled || pending.size > 0) {
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
