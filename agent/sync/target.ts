import { createHash, hash as hashOnce, type Hash } from 'node:crypto';
import { accessSync, closeSync, constants, existsSync, fchmodSync, fstatSync, lstatSync, mkdirSync, openSync, renameSync, rmSync, symlinkSync, chmodSync, unlinkSync, writeSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { MAX_SYNC_LINE_BYTES, SyncStreamDecoder, type SyncRecord, type SyncStreamEvent, type SyncTargetOpen, type SyncTargetStatus } from '../../protocol/sync.ts';
import type { ChannelContext, ChannelHandler } from '../exec.ts';
import { createExcludes, isMissing, TEMP_PREFIX, TreeScanner, treeHash, type TreeEntry } from './tree.ts';
import { resolveRoot, syncErrorMessage } from './paths.ts';
import { createSyncChannel, refusedChannel } from './channel.ts';
import { conflictCopyName } from './conflict.ts';
import { TwoWayTarget } from './two-way-target.ts';

/**
 * The op stream's window. The target applies what arrives at once (it never buffers), so the
 * window bounds only what is in flight. 2 MiB measured no better than 256 KiB for a 2,000-file
 * copy on the (loaded) bench machine, single runs each way: the default stays.
 */
const TARGET_WINDOW = 256 * 1024;

/** The paths of one `differs` line, JSON-encoded, stay under this (the line limit less room for the rest). */
const DIFFERS_LINE_BYTES = MAX_SYNC_LINE_BYTES - 4096;

/**
 * A `sync-target` channel on a service's agent: applies the op stream (protocol/sync.ts) to its
 * folder as it arrives, a file's bytes written straight to a temporary file that is renamed into
 * place (a dev server never reads half a file), and after each batch reports the hash of the
 * folder as read back from disk. The first error (unwritable folder, full disk) is reported as a
 * sentence and ends the channel: the server shows it and stops this sync.
 */
export function openSyncTarget(channel: number, spec: SyncTargetOpen, peerWindow: number, context: ChannelContext, onClosed: () => void): ChannelHandler {
  const root = resolveRoot(spec.root, context.home());
  const refusal = checkRoot(root);
  if (refusal) {
    context.send({ type: 'open_error', channel, code: 'SYNC_TARGET_UNWRITABLE', message: refusal });
    return refusedChannel(onClosed);
  }
  const scanner = new TreeScanner(root, createExcludes(spec.exclude));
  /** `keptAt`: two-way, the bytes are the other side's version of `path`, written beside it at this relative path (`copy`: a conflict copy the other side sent) */
  let current: { fd: number; temp: string; final: string; path: string; mode: number; size: number; hash: Hash | undefined; digest: string | undefined; keptAt?: string; copy?: boolean } | undefined;
  /** during a full copy: every path written or made, so full-end removes the rest */
  let seen: Set<string> | undefined;
  /** during a listing: the folder as verify-begin read it, the listed paths, and the differing ones not reported yet */
  let listing: { tree: Map<string, TreeEntry>; listed: Set<string>; differing: string[]; bytes: number; files: number } | undefined;
  /** the folder as full-end read it back: the batch that closes the copy reports its hash without a second scan */
  let scannedAtFullEnd: Map<string, TreeEntry> | undefined;
  let filesInBatch = 0;
  let tempCount = 0;
  /** folders this channel made or checked (real folders, not symlinks): forgotten at any op that can change what a path is */
  const folders = new Set<string>();

  const report = (status: SyncTargetStatus) => sync.sender.write('data', Buffer.from(`${JSON.stringify(status)}\n`));
  const dropCurrent = () => {
    if (!current) return;
    try {
      closeSync(current.fd);
      // half a new file is removed too: the next full copy or batch sends it whole
      unlinkSync(current.temp);
    } catch {
      // already gone
    }
    current = undefined;
  };

  const twoWay = spec.twoWay ? new TwoWayTarget(root, scanner, spec.twoWay, (status) => report(status)) : undefined;
  const decoder = new SyncStreamDecoder((event) => apply(event));
  const sync = createSyncChannel(channel, peerWindow, context, onClosed, {
    consume: (payload) => decoder.push(payload),
    failure: (error) => ({ code: 'SYNC_APPLY_FAILED', message: syncErrorMessage(error, root) }),
    reportError: (error) => report({ type: 'error', ...error }),
    cleanup: dropCurrent,
  }, TARGET_WINDOW);
  return sync.handler;

  function apply(event: SyncStreamEvent): void {
    if (event.type === 'body') {
      const file = current!;
      try {
        writeAll(file.fd, event.bytes);
      } catch (error) {
        // a write on a descriptor names no path: the sentence says which file did not fit
        throw Object.assign(error as NodeJS.ErrnoException, { path: file.final });
      }
      // a body that arrives whole (most files) is hashed in one call, without a hash object
      if (file.hash === undefined && file.digest === undefined && event.bytes.byteLength === file.size) file.digest = hashOnce('sha256', event.bytes);
      else (file.hash ??= createHash('sha256')).update(event.bytes);
      return;
    }
    if (event.type === 'body-end') {
      const done = current!;
      current = undefined;
      const digest = done.digest ?? (done.hash ?? createHash('sha256')).digest('hex');
      let stats: Stats;
      if (done.temp === done.final) {
        // a new file, made with its mode: fchmod only when the umask took bits away
        stats = fstatSync(done.fd);
        if ((stats.mode & 0o7777) !== done.mode) {
          fchmodSync(done.fd, done.mode);
          stats = fstatSync(done.fd);
        }
        closeSync(done.fd);
      } else {
        fchmodSync(done.fd, done.mode);
        closeSync(done.fd);
        replaceWith(done.final, () => renameSync(done.temp, done.final));
        stats = lstatSync(done.final);
      }
      if (done.copy) return twoWay?.copyReceived(done.path, done.keptAt!);
      twoWay?.afterWrite(done.path, { type: 'f', mode: done.mode, size: stats.size, digest }, done.keptAt);
      // the batch's hash then needs no second read of what was just written
      if (done.keptAt === undefined) scanner.remember(done.path, stats, digest);
      return;
    }
    applyRecord(event.record);
  }

  function applyRecord(record: SyncRecord): void {
    if (record.op !== 'batch') scannedAtFullEnd = undefined;
    if (record.op !== 'write' && record.op !== 'mkdir' && record.op !== 'chmod' && record.op !== 'batch' && record.op !== 'conflict') folders.clear();
    if (twoWay && (record.op === 'mkdir' || record.op === 'symlink' || record.op === 'delete') && !twoWay.beforeChange(record, seen !== undefined)) return;
    applyOp(record);
    // two-way: after full-end this tells the source here to take the folder as what the other side has
    if (twoWay && record.op !== 'write' && record.op !== 'conflict') twoWay.afterChange(record);
  }

  function applyOp(record: SyncRecord): void {
    switch (record.op) {
      case 'conflict':
      case 'write': {
        // two-way: the other side's version of a path this side also changed is written beside it
        const keptAt = record.op === 'conflict' ? conflictCopyName(record.path, new Date())
          : twoWay?.beforeWrite(record, seen !== undefined);
        let final = inRoot(keptAt ?? record.path);
        let fresh: number | undefined;
        try {
          // two-way writes always go through a rename: the source on this agent must never read half a file and send it back
          fresh = twoWay && keptAt === undefined ? undefined : createNew(final, record.mode);
        } catch (error) {
          // a folder removed behind our back (by the service): look at the path again
          if (!isMissing(error)) throw error;
          folders.clear();
          final = inRoot(keptAt ?? record.path);
          fresh = createNew(final, record.mode);
        }
        // A new file is written in place (nothing can have read it yet); a file that exists is
        // replaced by a rename, so a dev server never reads half of it. With the folders
        // remembered, this took the target's side of a 10,000-file copy from 10.5 s to 2.8 s.
        const temp = fresh === undefined ? join(final, '..', `${TEMP_PREFIX}${process.pid}-${++tempCount}`) : final;
        current = {
          fd: fresh ?? openSync(temp, 'wx', 0o600), temp, final, path: record.path, mode: record.mode, size: record.size, hash: undefined, digest: undefined,
          ...(keptAt === undefined ? {} : { keptAt, copy: record.op === 'conflict' }),
        };
        filesInBatch++;
        if (keptAt === undefined) mark(record.path);
        return;
      }
      case 'mkdir': {
        const path = inRoot(record.path);
        if (!isDirectory(path)) replaceWith(path, () => mkdirSync(path));
        chmodSync(path, record.mode);
        filesInBatch++;
        mark(record.path);
        return;
      }
      case 'symlink': {
        const path = inRoot(record.path);
        replaceWith(path, () => symlinkSync(record.target, path));
        filesInBatch++;
        mark(record.path);
        return;
      }
      case 'chmod':
        if (!lstatSync(inRoot(record.path)).isSymbolicLink()) chmodSync(inRoot(record.path), record.mode);
        filesInBatch++;
        return;
      case 'delete':
        rmSync(inRoot(record.path), { recursive: true, force: true });
        filesInBatch++;
        return;
      case 'rename': {
        const from = inRoot(record.from);
        const to = inRoot(record.to);
        filesInBatch++;
        mark(record.to);
        // a source that is not here (an earlier op failed to land) is caught by the hashes
        if (!exists(from)) return;
        replaceWith(to, () => renameSync(from, to));
        return;
      }
      case 'full-begin':
        seen = new Set();
        return;
      case 'full-end': {
        const keep = seen ?? new Set<string>();
        seen = undefined;
        const tree = scanner.scan();
        const extra = [...tree.keys()].filter((path) => !keep.has(path)).sort().reverse();
        for (const path of extra) rmSync(join(root, path), { recursive: true, force: true });
        filesInBatch += extra.length;
        // what full-end removed is gone from the tree too; the batch record comes next
        if (extra.length === 0) scannedAtFullEnd = tree;
        return;
      }
      case 'verify-begin':
        listing = { tree: scanner.scan(), listed: new Set(), differing: [], bytes: 0, files: 0 };
        return;
      case 'verify': {
        if (!listing) throw new Error('A sync listing entry came outside a listing.');
        const have = listing.tree.get(record.path);
        // only paths of the tree are remembered: memory stays the size of the service's folder
        if (have) listing.listed.add(record.path);
        if (have && have.type === record.type && have.digest === record.digest) {
          // only the mode differs: fixed here (the scan walked real folders, so no symlink is followed)
          if (have.mode !== record.mode && have.type !== 'l') chmodSync(join(root, record.path), record.mode);
          return;
        }
        differs(listing, record.path);
        return;
      }
      case 'verify-end': {
        if (!listing) throw new Error('A sync listing ended that had not begun.');
        const { tree, listed } = listing;
        reportDiffering(listing);
        const extra = [...tree.keys()].filter((path) => !listed.has(path)).sort().reverse();
        for (const path of extra) rmSync(join(root, path), { recursive: true, force: true });
        report({ type: 'differs-end', files: listing.files, removed: extra.length });
        listing = undefined;
        return;
      }
      case 'batch': {
        const hash = treeHash(scannedAtFullEnd ?? scanner.scan());
        scannedAtFullEnd = undefined;
        report({ type: 'applied', batch: record.batch, files: filesInBatch, hash, detectedAt: record.detectedAt, appliedAt: Date.now() });
        filesInBatch = 0;
        return;
      }
    }
  }

  /** Notes a path the service's copy lacks or has otherwise; reported in lines that stay under the line limit. */
  function differs(state: NonNullable<typeof listing>, path: string): void {
    const bytes = JSON.stringify(path).length + 1;
    if (state.bytes + bytes > DIFFERS_LINE_BYTES) reportDiffering(state);
    state.differing.push(path);
    state.bytes += bytes;
    state.files++;
  }

  function reportDiffering(state: NonNullable<typeof listing>): void {
    if (state.differing.length === 0) return;
    report({ type: 'differs', paths: state.differing });
    state.differing = [];
    state.bytes = 0;
  }

  /** A path of the stream inside the root, its parent folders made; refuses to go through a symlink. */
  function inRoot(relative: string): string {
    const segments = relative.split('/');
    let dir = root;
    let path = '';
    for (const segment of segments.slice(0, -1)) {
      dir = join(dir, segment);
      path = path === '' ? segment : `${path}/${segment}`;
      if (folders.has(path)) continue;
      folders.add(path);
      try {
        const stats = lstatSync(dir);
        if (stats.isSymbolicLink()) throw new Error(`${relative} goes through the symlink ${dir}; den does not write through symlinks.`);
        if (!stats.isDirectory()) replaceWith(dir, () => mkdirSync(dir));
      } catch (error) {
        if (!isMissing(error)) throw error;
        mkdirSync(dir);
      }
    }
    return join(root, relative);
  }

  function mark(relative: string): void {
    if (!seen) return;
    // the folders above a path are kept too
    for (let path = relative; path !== '' && !seen.has(path); path = path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : '') seen.add(path);
  }
}

/** Removes whatever is at `path` (a file of another type, a folder) when `make` finds it in the way. */
function replaceWith(path: string, make: () => void): void {
  try {
    make();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EEXIST' && code !== 'EISDIR' && code !== 'ENOTDIR' && code !== 'ENOTEMPTY') throw error;
    rmSync(path, { recursive: true, force: true });
    make();
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let offset = 0; offset < bytes.byteLength;) offset += writeSync(fd, bytes, offset);
}

function isDirectory(path: string): boolean {
  return lstatIfThere(path)?.isDirectory() ?? false;
}

function exists(path: string): boolean {
  return lstatIfThere(path) !== undefined;
}

/** undefined when nothing is there; a missing path makes no exception (making one costs more than the lstat). */
function lstatIfThere(path: string): Stats | undefined {
  try {
    return lstatSync(path, { throwIfNoEntry: false });
  } catch {
    // ENOTDIR (a part of the path is a file) and the like: nothing is there either
    return undefined;
  }
}

/** Why the target folder cannot take the sync, as a sentence; undefined when it can. */
function checkRoot(root: string): string | undefined {
  if (root === '/') return 'den does not sync into /; choose a folder such as /app.';
  try {
    makeRoot(root);
    accessSync(root, constants.W_OK);
    return undefined;
  } catch (error) {
    return syncErrorMessage(error, root);
  }
}

/**
 * Makes the folder and its parents. Node's recursive mkdir says ENOENT where the kernel said
 * EROFS (a read-only mount, such as a Kubernetes Secret volume): the first missing folder is then
 * made alone, which fails with the real reason.
 */
function makeRoot(root: string): void {
  try {
    mkdirSync(root, { recursive: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    let missing = root;
    while (dirname(missing) !== missing && !existsSync(dirname(missing))) missing = dirname(missing);
    mkdirSync(missing);
    mkdirSync(root, { recursive: true });
  }
}

/** Creates and opens a file that does not exist yet for writing; undefined when something is at the path. */
function createNew(path: string, mode: number): number | undefined {
  try {
    // owner-writable while it is written, whatever its final mode
    return openSync(path, 'wx', mode | 0o200);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
    throw error;
  }
}
