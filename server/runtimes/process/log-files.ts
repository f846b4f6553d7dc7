import { closeSync, fstatSync, ftruncateSync, openSync, readdirSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { listStateDirs, workspacePaths } from './state.ts';

/**
 * Bounds the log files of the process runtime (a service's stdout and stderr, the agent's).
 * Services write to their file directly, through a descriptor they keep after den exits, so den
 * cannot stop a write; instead it checks the files every LOG_CAP_INTERVAL_MS and cuts a file
 * that grew past `maxBytes` down to its head and its tail, with one marker line in between that
 * says how many lines and bytes were dropped and why. What a file can reach is `maxBytes` plus
 * what its writer manages in one interval.
 */
export interface LogFileLimits {
  /** a file larger than this is cut */
  maxBytes: number;
  /** kept from the start (where a failure usually shows) */
  headBytes: number;
  /** kept from the end (the latest output) */
  tailBytes: number;
}

export const DEFAULT_LOG_FILE_LIMITS: LogFileLimits = Object.freeze({
  maxBytes: 16 * 1024 * 1024,
  headBytes: 1024 * 1024,
  tailBytes: 4 * 1024 * 1024,
});

export const LOG_CAP_INTERVAL_MS = 2_000;

const MARKER_PREFIX = '[den] cut ';
const MARKER = /^\[den\] cut (\d+) lines \((\d+) bytes\) of this log here/;
const CHUNK = 1024 * 1024;
/** a marker line is about 250 bytes; the middle must be larger for the copy to stay behind the writer */
const MARKER_ROOM = 4096;

/** Cuts every log file of every workspace in the data dir that is over the limit. */
export function capWorkspaceLogs(dataDir: string, limits: LogFileLimits, onError: (file: string, error: unknown) => void): void {
  for (const id of listStateDirs(dataDir)) {
    const dir = workspacePaths(dataDir, id).logs;
    let names: string[];
    try {
      names = readdirSync(dir).filter((name) => name.endsWith('.log'));
    } catch {
      continue; // no logs yet, or deleted meanwhile
    }
    for (const name of names) {
      try {
        capLogFile(join(dir, name), limits);
      } catch (error) {
        onError(join(dir, name), error);
      }
    }
  }
}

/**
 * Keeps the head and the tail of a file over `maxBytes` and replaces the middle with a marker
 * line (counts add up over repeated cuts). Returns the bytes dropped (0 when under the limit).
 *
 * The writer appends (O_APPEND) while this runs. The marker and the tail are written over the
 * dropped middle first, then whatever the writer added meanwhile is copied after them until the
 * size holds still, and only then is the file truncated behind the copy: the writer's later
 * appends follow in order, and only what it writes between the last size check and the truncate
 * (one system call apart) can be lost.
 */
export function capLogFile(file: string, limits: LogFileLimits): number {
  const fd = openSync(file, 'r+');
  try {
    const size = fstatSync(fd).size;
    if (size <= limits.maxBytes) return 0;
    const { keep, dropFrom, before } = headOf(fd, limits);
    // The tail starts at a line start, so the marker is followed by whole lines.
    const tailStart = lineStartAfter(fd, size - limits.tailBytes, size);
    // Too little in between to be worth a marker (the limits leave no room): leave the file.
    if (tailStart - dropFrom <= MARKER_ROOM) return 0;
    const lines = before.lines + countLines(fd, dropFrom, tailStart);
    const bytes = before.bytes + (tailStart - dropFrom);
    let to = keep + writeAt(fd, Buffer.from(markerLine(limits, lines, bytes)), keep);
    let from = tailStart;
    for (let end = size; ;) {
      to += writeAt(fd, readRange(fd, from, end), to);
      from = end;
      const now = fstatSync(fd).size;
      if (now === end) break;
      end = now;
    }
    ftruncateSync(fd, to);
    return tailStart - dropFrom;
  } finally {
    closeSync(fd);
  }
}

function markerLine(limits: LogFileLimits, lines: number, bytes: number): string {
  return `${MARKER_PREFIX}${lines} lines (${bytes} bytes) of this log here: a log file keeps its first ${mib(limits.headBytes)} ` +
    `and its last ${mib(limits.tailBytes)} once it passes ${mib(limits.maxBytes)}, so that no workspace can fill the disk.\n`;
}

/**
 * Where the kept head ends (`keep`), where the dropped part starts (after an earlier marker, whose
 * counts are `before`) and those counts.
 */
function headOf(fd: number, limits: LogFileLimits): { keep: number; dropFrom: number; before: { lines: number; bytes: number } } {
  const head = readRange(fd, 0, limits.headBytes + 4096);
  const at = head.indexOf(`\n${MARKER_PREFIX}`);
  const start = head.subarray(0, MARKER_PREFIX.length).toString() === MARKER_PREFIX ? 0 : at >= 0 && at < limits.headBytes ? at + 1 : -1;
  if (start >= 0) {
    const end = head.indexOf(0x0a, start);
    const match = MARKER.exec(head.subarray(start, end < 0 ? undefined : end).toString('utf8'));
    if (match && end >= 0) return { keep: start, dropFrom: end + 1, before: { lines: Number(match[1]), bytes: Number(match[2]) } };
  }
  const newline = head.subarray(0, limits.headBytes).lastIndexOf(0x0a);
  const keep = newline >= 0 ? newline + 1 : Math.min(limits.headBytes, head.length);
  return { keep, dropFrom: keep, before: { lines: 0, bytes: 0 } };
}

function lineStartAfter(fd: number, position: number, size: number): number {
  const probe = readRange(fd, position, Math.min(size, position + 64 * 1024));
  const newline = probe.indexOf(0x0a);
  return newline >= 0 ? position + newline + 1 : position;
}

function countLines(fd: number, from: number, to: number): number {
  let lines = 0;
  const buffer = Buffer.alloc(CHUNK);
  for (let position = from; position < to;) {
    const read = readSync(fd, buffer, 0, Math.min(CHUNK, to - position), position);
    if (read === 0) break;
    for (let i = buffer.indexOf(0x0a, 0); i >= 0 && i < read; i = buffer.indexOf(0x0a, i + 1)) lines++;
    position += read;
  }
  return lines;
}

function readRange(fd: number, from: number, to: number): Buffer {
  const buffer = Buffer.alloc(Math.max(0, to - from));
  let filled = 0;
  while (filled < buffer.length) {
    const read = readSync(fd, buffer, filled, buffer.length - filled, from + filled);
    if (read === 0) break;
    filled += read;
  }
  return buffer.subarray(0, filled);
}

/** Writes all of `buffer` at `position`; returns its length. */
function writeAt(fd: number, buffer: Buffer, position: number): number {
  for (let written = 0; written < buffer.length;) written += writeSync(fd, buffer, written, buffer.length - written, position + written);
  return buffer.length;
}

function mib(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${+(bytes / (1024 * 1024)).toFixed(1)} MiB` : `${bytes} bytes`;
}
