/**
 * How much of a build log the store keeps. Build logs take lines from sources den does not
 * trust (startup scripts run by the agent, and the agent itself, whose token workspace code can
 * read): without a cap one build filled the database with 30,000 lines / 40 MB.
 *
 * A build keeps its head (the first lines, where the cause of a failure usually is) and a rolling
 * tail (the last lines, where it ended). Lines in between are deleted as the tail moves on, and
 * one marker row, placed where they were, says how many lines and bytes were dropped and why. A
 * workspace keeps the logs of its newest builds only; older builds' lines are replaced by a note.
 * Worst case per workspace: `keepBuilds` x (head + tail) bytes, about 20 MiB with the defaults.
 */
export interface BuildLogLimits {
  headLines: number;
  headBytes: number;
  tailLines: number;
  tailBytes: number;
  /** how many of a workspace's newest builds keep their logs */
  keepBuilds: number;
}

export const DEFAULT_BUILD_LOG_LIMITS: BuildLogLimits = Object.freeze({
  headLines: 2_000,
  headBytes: 1024 * 1024,
  tailLines: 2_000,
  tailBytes: 1024 * 1024,
  keepBuilds: 10,
});

/** The `step` of the rows den writes about the cap itself (the cut marker, the retention note). */
export const LOG_CAP_STEP = 'den-log-cap';

/** What the writer knows of one build's stored log: the head's size, the marker, the tail rows. */
export interface BuildLogUsage {
  headLines: number;
  headBytes: number;
  /** set once a line did not fit the head: every later line is in the tail */
  headFull: boolean;
  marker?: { id: number; lines: number; bytes: number };
  /** the stored rows after the head (and after the marker once there is one), oldest first */
  tail: { id: number; bytes: number }[];
}

export function cutMarkerLine(limits: BuildLogLimits, lines: number, bytes: number): string {
  return `den cut ${lines} lines (${bytes} bytes) here: a build log keeps its first ${limits.headLines} lines ` +
    `(${mib(limits.headBytes)}) and its last ${limits.tailLines} lines (${mib(limits.tailBytes)}), so that no build can fill the disk. ` +
    'Write less output, or send it to a file in the workspace.';
}

export function retentionNote(limits: BuildLogLimits): string {
  return `den deleted this build's log: a workspace keeps the logs of its newest ${limits.keepBuilds} builds.`;
}

/**
 * Rebuilds the usage of a build from its stored rows (oldest first, with their UTF-8 size), when
 * this process first writes to it. `line` is needed only of den's own rows (LOG_CAP_STEP).
 */
export function usageOfRows(rows: { id: number; step: string | null; bytes: number; line: string | null }[], limits: BuildLogLimits): BuildLogUsage {
  const usage: BuildLogUsage = { headLines: 0, headBytes: 0, headFull: false, tail: [] };
  const markerAt = rows.findIndex((row) => row.step === LOG_CAP_STEP && CUT_COUNTS.test(row.line ?? ''));
  for (const [index, row] of rows.entries()) {
    if (markerAt >= 0 && index === markerAt) {
      const [, lines, cut] = CUT_COUNTS.exec(row.line!)!;
      usage.headFull = true;
      usage.marker = { id: row.id, lines: Number(lines), bytes: Number(cut) };
    } else if (markerAt >= 0 ? index < markerAt : fitsHead(usage, row.bytes, limits)) {
      usage.headLines++;
      usage.headBytes += row.bytes;
    } else {
      usage.headFull = true;
      usage.tail.push({ id: row.id, bytes: row.bytes });
    }
  }
  return usage;
}

/** Splits new lines of a build into those that go to the head and those that go to the tail. */
export function splitHead<T extends { line: string }>(usage: BuildLogUsage, rows: T[], limits: BuildLogLimits): { head: T[]; tail: { row: T; bytes: number }[] } {
  const head: T[] = [];
  const tail: { row: T; bytes: number }[] = [];
  for (const row of rows) {
    const bytes = Buffer.byteLength(row.line);
    if (!usage.headFull && fitsHead(usage, bytes, limits)) {
      usage.headLines++;
      usage.headBytes += bytes;
      head.push(row);
    } else {
      usage.headFull = true;
      tail.push({ row, bytes });
    }
  }
  return { head, tail };
}

/**
 * How many of the oldest tail entries (the stored ones, then the new ones) must go so that the
 * rest fits the tail window; counted from the newest back.
 */
export function tailOverflow(bytes: number[], limits: BuildLogLimits): number {
  let lines = 0;
  let total = 0;
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (lines + 1 > limits.tailLines || total + bytes[i] > limits.tailBytes) return i + 1;
    lines++;
    total += bytes[i];
  }
  return 0;
}

const CUT_COUNTS = /^den cut (\d+) lines \((\d+) bytes\) here/;

function fitsHead(usage: BuildLogUsage, bytes: number, limits: BuildLogLimits): boolean {
  return usage.headLines < limits.headLines && usage.headBytes + bytes <= limits.headBytes;
}

function mib(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${+(bytes / (1024 * 1024)).toFixed(1)} MiB` : `${bytes} bytes`;
}
