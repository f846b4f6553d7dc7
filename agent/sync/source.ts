import { closeSync, fstatSync, openSync, readlinkSync, readSync, statSync, unlinkSync, type Stats } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import {
  encodeSyncRecord, LineSplitter, MAX_SYNC_FILE_BYTES, MAX_SYNC_LINE_BYTES, syncSourceCommandSchema,
  type SyncRecord, type SyncSourceOpen, type SyncSourceStatus,
} from '../../protocol/sync.ts';
import { MAX_DATA_PAYLOAD } from '../../protocol/agent.ts';
import type { ChannelContext, ChannelHandler } from '../exec.ts';
import { planBatch } from './batch.ts';
import { createSyncChannel, refusedChannel } from './channel.ts';
import { folderSignature, signatureOf, withoutRenames } from './conflict.ts';
import { forgetSubtree, moveSubtree, registerPairedSource } from './pair.ts';
import { resolveRoot, syncErrorMessage } from './paths.ts';
import { createExcludes, TreeScanner, treeHash, type TreeEntry } from './tree.ts';
import { TreeWatcher } from './watch.ts';

/** Changes are sent once the folder was quiet this long... */
const QUIET_MS = 10;
/** ...or this long after the first change, whichever comes first (a steady stream of edits still flows). */
const MAX_DELAY_MS = 100;
/** How often the folder is rescanned when inotify is not available (watch limits reached). */
const SCAN_INTERVAL_MS = 1_000;
/** How often the folder is rescanned anyway while inotify watches it: catches what inotify missed (events dropped on overflow). */
const VERIFY_INTERVAL_MS = 30_000;
const READ_CHUNK = 256 * 1024;

/**
 * A `sync-source` channel on the workspace's agent: sends its folder in full (the initial copy),
 * then watches it (inotify through fs.watch, or periodic scans when the watch limits are
 * reached, which it reports) and sends each batch of changes in order, closed by a `batch` record
 * carrying the hash of everything sent. What was sent is remembered (`sent`), so a batch carries
 * only what differs from it and the hash needs no rescan. A file is read while it is sent, under
 * the link's credit: memory holds one chunk, whatever the tree's size.
 */
export function openSyncSource(channel: number, spec: SyncSourceOpen, peerWindow: number, context: ChannelContext, onClosed: () => void): ChannelHandler {
  const root = resolveRoot(spec.root, context.home());
  try {
    if (!statSync(root).isDirectory()) throw Object.assign(new Error('not a folder'), { code: 'ENOTDIR', path: root });
  } catch (error) {
    context.send({ type: 'open_error', channel, code: 'SYNC_SOURCE_MISSING', message: `The workspace has no folder ${root} to sync: ${syncErrorMessage(error, root)}` });
    return refusedChannel(onClosed);
  }
  const scanner = new TreeScanner(root, createExcludes(spec.exclude));
  const twoWay = spec.twoWay;
  let sent = new Map<string, TreeEntry>();
  try {
    // two-way, service to workspace: the full copy the other way just made both folders the same
    if (twoWay?.initial === 'known') sent = scanner.scan();
  } catch (error) {
    context.send({ type: 'open_error', channel, code: 'SYNC_SOURCE_MISSING', message: `The folder ${root} cannot be read: ${syncErrorMessage(error, root)}` });
    return refusedChannel(onClosed);
  }
  const dirty = new Set<string>();
  /** two-way: files of this side an incoming change replaced, to send as conflict copies */
  const conflictCopies: { path: string; stash: string; mode: number }[] = [];
  let firstChangeAt: number | undefined;
  let needFull = twoWay?.initial !== 'known';
  let batch = 0;
  let pumping = false;
  let flushTimer: NodeJS.Timeout | undefined;
  let scanTimer: NodeJS.Timeout | undefined;
  let watcher: TreeWatcher | undefined;
  let drained: (() => void) | undefined;
  const commands = new LineSplitter(MAX_SYNC_LINE_BYTES, (line) => {
    if (!syncSourceCommandSchema.safeParse(parseJson(line)).success) throw new Error('The server sent a sync command the agent does not understand.');
    needFull = true;
    void pump();
  });
  const sync = createSyncChannel(channel, peerWindow, context, onClosed, {
    consume: (payload) => commands.push(payload),
    failure: (error) => ({ code: 'SYNC_PROTOCOL_ERROR', message: (error as Error).message }),
    reportError: (error) => status({ type: 'error', ...error }),
    cleanup: () => {
      stopWatching();
      unregister?.();
      for (const copy of conflictCopies.splice(0)) removeQuietly(copy.stash);
      drained?.();
    },
  });
  const sender = sync.sender;
  sender.onDrain = () => drained?.();
  const status = (line: SyncSourceStatus) => sender.write('stderr', Buffer.from(`${JSON.stringify(line)}\n`));
  // Records are gathered into DATA frames of up to MAX_DATA_PAYLOAD: a small file's header and
  // body would otherwise be two websocket messages at every hop (measured: a 2,000-file copy took
  // three times as long with a message per record).
  let gathered: Uint8Array[] = [];
  let gatheredBytes = 0;
  const flush = async () => {
    if (gatheredBytes === 0) return;
    const bytes = gathered.length === 1 ? gathered[0] : Buffer.concat(gathered, gatheredBytes);
    gathered = [];
    gatheredBytes = 0;
    if (sync.finished) throw new Closed();
    if (sender.write('data', bytes)) return;
    await new Promise<void>((resolve) => { drained = resolve; });
    drained = undefined;
    if (sync.finished) throw new Closed();
  };
  const send = async (bytes: Uint8Array) => {
    gathered.push(bytes);
    gatheredBytes += bytes.byteLength;
    if (gatheredBytes >= MAX_DATA_PAYLOAD) await flush();
  };
  const finish = sync.finish;

  const changed = (path: string) => {
    dirty.add(path);
    firstChangeAt ??= Date.now();
    clearTimeout(flushTimer);
    const wait = Math.max(0, Math.min(QUIET_MS, firstChangeAt + MAX_DELAY_MS - Date.now()));
    flushTimer = setTimeout(() => void pump(), wait);
  };
  const unregister = twoWay && registerPairedSource(twoWay.pair, {
    known: (path) => sent.get(path),
    setKnown: (path, entry) => {
      if (entry) sent.set(path, entry);
      else forgetSubtree(sent, path);
    },
    moveKnown: (from, to) => moveSubtree(sent, from, to),
    touch: (path) => changed(path),
    resetKnown: () => {
      sent = scanner.scan();
    },
    sendConflictCopy: (path, stash, mode) => {
      conflictCopies.push({ path, stash, mode });
      firstChangeAt ??= Date.now();
      void pump();
    },
  });
  /** two-way: what the other side had at `path` before this change, so it can see a conflict */
  const baseOf = (path: string, deleting = false) => {
    if (!twoWay) return {};
    return { base: deleting && sent.get(path)?.type === 'd' ? folderSignature(sent, path) : signatureOf(sent.get(path)) };
  };
  const rescan = () => {
    // compare the folder with what was sent; every difference becomes a change
    try {
      const now = scanner.scan();
      for (const [path, entry] of now) {
        const before = sent.get(path);
        if (!before || before.type !== entry.type || before.mode !== entry.mode || before.digest !== entry.digest) changed(path);
      }
      for (const path of sent.keys()) if (!now.has(path)) changed(path);
    } catch (error) {
      finish({ code: 'SYNC_SOURCE_FAILED', message: syncErrorMessage(error, root) });
    }
  };
  const startWatching = () => {
    try {
      watcher = new TreeWatcher(root, scanner.excludes, changed, (error) => fallBackToScanning(error));
      watcher.start();
      scanTimer = setInterval(rescan, VERIFY_INTERVAL_MS);
      status({ type: 'watching', mode: 'inotify' });
    } catch (error) {
      fallBackToScanning(error);
    }
  };
  const fallBackToScanning = (error: unknown) => {
    watcher?.close();
    watcher = undefined;
    clearInterval(scanTimer);
    scanTimer = setInterval(rescan, SCAN_INTERVAL_MS);
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOSPC' || code === 'EMFILE'
      ? 'the inotify watch limit of the workspace is reached (raise fs.inotify.max_user_watches on the host)'
      : `inotify failed (${(error as Error).message})`;
    status({ type: 'watching', mode: 'scan', message: `The workspace folder is scanned every ${SCAN_INTERVAL_MS / 1000} s because ${why}; changes arrive up to that much later.` });
    rescan();
  };
  const stopWatching = () => {
    watcher?.close();
    watcher = undefined;
    clearTimeout(flushTimer);
    clearInterval(scanTimer);
  };

  /** Sends what is due, one batch at a time, until nothing is. */
  const pump = async () => {
    if (pumping || sync.finished) return;
    pumping = true;
    try {
      while (!sync.finished && (needFull || dirty.size > 0 || conflictCopies.length > 0)) {
        const detectedAt = firstChangeAt ?? Date.now();
        firstChangeAt = undefined;
        const copies = await sendConflictCopies();
        const files = copies + (needFull ? await sendFull() : await sendChanges());
        batch++;
        const hash = treeHash(sent);
        await send(encodeSyncRecord({ op: 'batch', batch, files, hash, detectedAt }));
        await flush();
        status({ type: 'batch', batch, files, hash, detectedAt });
        status({ type: 'pending', files: dirty.size });
      }
    } catch (error) {
      if (!(error instanceof Closed)) finish({ code: 'SYNC_SOURCE_FAILED', message: syncErrorMessage(error, root) });
    } finally {
      pumping = false;
    }
  };

  const sendFull = async (): Promise<number> => {
    needFull = false;
    dirty.clear();
    // digests are taken while the files are sent: each file is read once
    const entries = scanner.scanWithoutReading();
    await send(encodeSyncRecord({ op: 'full-begin' }));
    const next = new Map<string, TreeEntry>();
    for (const path of [...entries.keys()].sort()) await sendEntry(path, entries.get(path)!, next);
    await send(encodeSyncRecord({ op: 'full-end' }));
    sent = next;
    return entries.size;
  };

  const sendChanges = async (): Promise<number> => {
    const paths = [...dirty];
    dirty.clear();
    status({ type: 'pending', files: paths.length });
    const now = new Map<string, TreeEntry>();
    for (const path of paths) scanner.scanPath(path, now);
    const plan = planBatch(sent, paths, now);
    for (const op of twoWay ? withoutRenames(plan.ops, now) : plan.ops) {
      if (op.op === 'send') {
        await sendEntry(op.path, op.entry, sent);
        continue;
      }
      await send(encodeSyncRecord(op.op === 'delete' ? { ...op, ...baseOf(op.path, true) } : op));
      if (op.op === 'delete') for (const path of [...sent.keys()]) if (path === op.path || path.startsWith(`${op.path}/`)) sent.delete(path);
      if (op.op === 'rename') {
        const entry = sent.get(op.from)!;
        sent.delete(op.from);
        sent.set(op.to, entry);
      }
      if (op.op === 'chmod') sent.set(op.path, { ...sent.get(op.path)!, mode: op.mode });
    }
    return plan.ops.length;
  };

  /** Sends the files an incoming change replaced here, each once, from the copy the target kept. */
  const sendConflictCopies = async (): Promise<number> => {
    let count = 0;
    for (let copy = conflictCopies.shift(); copy; copy = conflictCopies.shift()) {
      let fd: number;
      try {
        fd = openSync(copy.stash, 'r');
      } catch {
        continue;
      }
      try {
        const size = fstatSync(fd).size;
        // larger than the stream carries: the workspace's version stays, the service's is not kept
        if (size > MAX_SYNC_FILE_BYTES) continue;
        await send(encodeSyncRecord({ op: 'conflict', path: copy.path, mode: copy.mode, size }));
        for (let left = size; left > 0;) {
          const chunk = Buffer.alloc(Math.min(READ_CHUNK, left));
          readSync(fd, chunk, 0, chunk.byteLength, size - left);
          left -= chunk.byteLength;
          await send(chunk);
        }
        count++;
      } finally {
        closeSync(fd);
        removeQuietly(copy.stash);
      }
    }
    return count;
  };

  /** Sends one entry as mkdir, symlink or write, and records what was sent in `into`. */
  const sendEntry = async (path: string, entry: TreeEntry, into: Map<string, TreeEntry>) => {
    // a full copy carries no base: the workspace's folder replaces the service's whole
    const base = into === sent ? baseOf(path) : {};
    if (entry.type === 'd') {
      await send(encodeSyncRecord({ op: 'mkdir', path, mode: entry.mode, ...base }));
      into.set(path, entry);
      return;
    }
    if (entry.type === 'l') {
      const target = readLink(join(root, path));
      if (target === undefined) return changed(path);
      await send(encodeSyncRecord({ op: 'symlink', path, target, ...base }));
      into.set(path, entry);
      return;
    }
    into.set(path, { ...entry, digest: await sendFile(path, entry, base) });
  };

  /** Streams a file's bytes; returns the digest of what was sent (a file that changed meanwhile is marked to send again). */
  const sendFile = async (path: string, entry: TreeEntry, base: { base?: string | null } = {}): Promise<string> => {
    if (entry.size > MAX_SYNC_FILE_BYTES) throw new Error(`${path} is ${entry.size} bytes; den syncs files of at most ${MAX_SYNC_FILE_BYTES} bytes, so exclude it.`);
    const known = twoWay && entry.digest !== '' ? { digest: entry.digest } : {};
    const record: SyncRecord = { op: 'write', path, mode: entry.mode, size: entry.size, ...base, ...known };
    await send(encodeSyncRecord(record));
    const hash = createHash('sha256');
    let fd: number | undefined;
    let before: Stats | undefined;
    try {
      fd = openSync(join(root, path), 'r');
      before = fstatSync(fd);
    } catch {
      // gone since the scan: send the promised bytes as zeros; the change that removed it follows
    }
    let left = entry.size;
    let complete = fd !== undefined;
    try {
      while (left > 0) {
        // a fresh buffer per chunk: the sender may hold it until the peer grants credit
        const chunk = Buffer.allocUnsafe(Math.min(READ_CHUNK, left));
        const read = fd === undefined ? 0 : readSync(fd, chunk, 0, chunk.byteLength, entry.size - left);
        if (read < chunk.byteLength) {
          chunk.fill(0, read);
          complete = false;
        }
        hash.update(chunk);
        left -= chunk.byteLength;
        await send(chunk);
      }
      if (fd !== undefined) {
        const after = fstatSync(fd);
        if (after.size !== entry.size || after.mtimeMs !== before!.mtimeMs || after.ctimeMs !== before!.ctimeMs) complete = false;
      }
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
    const digest = hash.digest('hex');
    // a file that changed while it was read goes again in the next batch
    if (!complete || (entry.digest !== '' && digest !== entry.digest)) changed(path);
    else scanner.remember(path, before!, digest);
    return digest;
  };

  startWatching();
  void pump();
  return sync.handler;
}

class Closed extends Error {}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // already gone
  }
}

function readLink(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

function parseJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}
