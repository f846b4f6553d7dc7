import { createHash } from 'node:crypto';
import { closeSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import ignore from 'ignore';

/**
 * The synced tree as both agents see it: entries by relative path ('/'-separated), and the one
 * hash both compute from them (protocol/sync.ts describes it). Digests are cached by the file's
 * identity (inode, size, mtime, ctime), so a rescan after a small change reads only what changed.
 */
export interface TreeEntry {
  type: 'f' | 'd' | 'l';
  /** permission bits (0o7777) */
  mode: number;
  size: number;
  /** sha256 (hex) of a file's content or a symlink's target; '' for a folder */
  digest: string;
}

/** The prefix of the files the target writes before renaming them into place: never synced. */
export const TEMP_PREFIX = '.den-sync-tmp-';
/** The marker in the name of a two-way conflict copy (agent/sync/conflict.ts): never synced. */
export const CONFLICT_MARK = '.den-conflict-';
const HASH_CHUNK = 1024 * 1024;
/** One read buffer for all digests: the agent hashes one file at a time (a buffer per file cost more in GC than in hashing). */
const hashBuffer = Buffer.allocUnsafe(HASH_CHUNK);

/** True when a path (relative, a folder's with isDir) is excluded by the gitignore patterns. */
export type Excludes = (path: string, isDir: boolean) => boolean;

export function createExcludes(patterns: string[]): Excludes {
  const matcher = ignore().add(patterns);
  const none = patterns.length === 0;
  return (path, isDir) => {
    const base = path.slice(path.lastIndexOf('/') + 1);
    if (base.startsWith(TEMP_PREFIX) || base.includes(CONFLICT_MARK)) return true;
    // the matcher costs a few microseconds a path even with no pattern
    return !none && matcher.ignores(isDir ? `${path}/` : path);
  };
}

/** sha256 over the sorted entries: the same on both agents for the same tree. */
export function treeHash(entries: ReadonlyMap<string, TreeEntry>): string {
  const hash = createHash('sha256');
  for (const path of [...entries.keys()].sort()) {
    const entry = entries.get(path)!;
    hash.update(`${entry.type}\0${path}\0${entry.mode.toString(8)}\0${entry.digest}\n`);
  }
  return hash.digest('hex');
}

/** Walks a folder and describes every entry that is not excluded, reusing cached digests. */
export class TreeScanner {
  private cache = new Map<string, { key: string; digest: string }>();
  private reading = true;
  readonly root: string;
  readonly excludes: Excludes;

  constructor(root: string, excludes: Excludes) {
    this.root = root;
    this.excludes = excludes;
  }

  /** Every entry under the root (the root itself not included). Throws when the root cannot be read. */
  scan(): Map<string, TreeEntry> {
    const out = new Map<string, TreeEntry>();
    this.walk('', out);
    return this.forgetGone(out);
  }

  /**
   * Like scan, but files whose digest is not cached get digest '' instead of being read: for a
   * full copy, which reads each file once to send it and digests it then (see `remember`).
   */
  scanWithoutReading(): Map<string, TreeEntry> {
    this.reading = false;
    try {
      return this.scan();
    } finally {
      this.reading = true;
    }
  }

  /** Caches the digest of a file just read or written whole, so the next scan need not read it. */
  remember(path: string, stats: Stats, digest: string): void {
    this.cache.set(path, { key: cacheKey(stats), digest });
  }

  private forgetGone(out: Map<string, TreeEntry>): Map<string, TreeEntry> {
    // forget digests of paths that are gone, so the cache stays the size of the tree
    for (const path of this.cache.keys()) if (!out.has(path)) this.cache.delete(path);
    return out;
  }

  /** The entry at `path` and, for a folder, everything under it; nothing when it is missing or excluded. */
  scanPath(path: string, out: Map<string, TreeEntry>): void {
    const entry = this.describe(path);
    if (!entry) return;
    out.set(path, entry);
    if (entry.type === 'd') this.walk(path, out);
  }

  /** One entry, or undefined when it is missing, excluded, or neither file, folder nor symlink. */
  describe(path: string): TreeEntry | undefined {
    let stats: Stats;
    try {
      stats = lstatSync(join(this.root, path));
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
    return this.entryOf(path, stats);
  }

  private walk(dir: string, out: Map<string, TreeEntry>): void {
    let names: string[];
    try {
      names = readdirSync(join(this.root, dir));
    } catch (error) {
      // a folder deleted while we walk is simply gone; the root missing is the caller's error
      if (dir !== '' && isMissing(error)) return;
      throw error;
    }
    for (const name of names) {
      const path = dir === '' ? name : `${dir}/${name}`;
      const entry = this.describe(path);
      if (!entry) continue;
      out.set(path, entry);
      if (entry.type === 'd') this.walk(path, out);
    }
  }

  private entryOf(path: string, stats: Stats): TreeEntry | undefined {
    const isDir = stats.isDirectory();
    if (this.excludes(path, isDir)) return undefined;
    const mode = stats.mode & 0o7777;
    if (isDir) return { type: 'd', mode, size: 0, digest: '' };
    if (stats.isSymbolicLink()) {
      let target: string;
      try {
        target = readlinkSync(join(this.root, path));
      } catch (error) {
        if (isMissing(error)) return undefined;
        throw error;
      }
      // a symlink's permission bits mean nothing on Linux and differ by umask: hashed as 0
      return { type: 'l', mode: 0, size: 0, digest: sha256(target) };
    }
    if (!stats.isFile()) return undefined;
    const key = cacheKey(stats);
    const cached = this.cache.get(path);
    if (cached?.key === key) return { type: 'f', mode, size: stats.size, digest: cached.digest };
    if (!this.reading) return { type: 'f', mode, size: stats.size, digest: '' };
    const digest = fileDigest(join(this.root, path));
    if (digest === undefined) return undefined;
    this.cache.set(path, { key, digest });
    return { type: 'f', mode, size: stats.size, digest };
  }
}

function cacheKey(stats: Stats): string {
  return `${stats.ino}:${stats.size}:${stats.mtimeMs}:${stats.ctimeMs}`;
}

export function sha256(value: string | Uint8Array): string {
  return createHash('sha256').update(value).digest('hex');
}

/** sha256 of a file's content, read in chunks; undefined when it vanished. */
function fileDigest(path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
  try {
    const hash = createHash('sha256');
    for (let read = readSync(fd, hashBuffer); read > 0; read = readSync(fd, hashBuffer)) hash.update(hashBuffer.subarray(0, read));
    return hash.digest('hex');
  } finally {
    closeSync(fd);
  }
}

export function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
