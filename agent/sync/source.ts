import { closeSync, fstatSync, openSync, readlinkSync, readSync, statSync, unlinkSync, type Stats } from 'node:fs';
import { createHash, hash as hashOnce, type Hash } from 'node:crypto';
import { join } from 'node:path';
import {
  encodeSyncRecord, LineSplitter, MAX_SYNC_FILE_BYTES, MAX_SYNC_LINE_BYTES, syncSourceCommandSchema,
  type SyncRecord, type SyncSourceOpen, type SyncSourceStatus,
} from '../../protocol/sync.ts';
import { CHANNEL_HEADER_BYTES, MAX_DATA_PAYLOAD } from '../../protocol/agent.ts';
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
/** A file up to this size is read whole and hashed in one call. */
const SMALL_FILE_BYTES = 256 * 1024;

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
  let needListing = false;
  const commands = new LineSplitter(MAX_SYNC_LINE_BYTES, (line) => {
    const command = syncSourceCommandSchema.safeParse(parseJson(line));
    if (!command.success) throw new Error('The server sent a sync command the agent does not understand.');
    if (command.data.type === 'resend') {
      // the service's copy of these differs: forgotten as sent, they go in the next batch
      for (const path of command.data.paths) {
        sent.delete(path);
        changed(path);
      }
      return;
    }
    if (command.data.full) needFull = true;
    else needListing = true;
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
  // Records are packed into DATA frames of MAX_DATA_PAYLOAD as they are made: a small file's
  // header and body would otherwise be two websocket messages at every hop (measured: a 2,000-file
  // copy took three times as long with a message per record), and a file's bytes are read
  // straight into the frame, so each byte is copied once on its way out. Each frame has room for
  // the link's header before it (it is sent without another copy), and is fresh per send: the
  // sender may hold the last one until the peer grants credit.
  const newFrame = () => Buffer.allocUnsafe(CHANNEL_HEADER_BYTES + MAX_DATA_PAYLOAD).subarray(CHANNEL_HEADER_BYTES);
  let frame = newFrame();
  let used = 0;
  /** small files are read into this, one at a time (a byte longer, to see a file that grew) */
  const smallFile = Buffer.allocUnsafe(SMALL_FILE_BYTES + 1);
  const flush = async () => {
    if (used === 0) return;
    const bytes = frame.subarray(0, used);
    frame = newFrame();
    used = 0;
    if (sync.finished) throw new Closed();
    if (sender.write('data', bytes, undefined, true)) return;
    await new Promise<void>((resolve) => { drained = resolve; });
    drained = undefined;
    if (sync.finished) throw new Closed();
  };
  /** Room in the frame for at least one more byte: a full frame is sent first. */
  const room = async () => {
    if (used === MAX_DATA_PAYLOAD) await flush();
  };
  const send = async (bytes: Uint8Array) => {
    for (let offset = 0; offset < bytes.byteLength;) {
      await room();
      const take = Math.min(bytes.byteLength - offset, MAX_DATA_PAYLOAD - used);
      frame.set(bytes.subarray(offset, offset + take), used);
      used += take;
      offset += take;
    }
  };
  const sendRecord = async (record: SyncRecord) => {
    await send(encodeSyncRecord(record));
  };
  /**
   * Reads `size` bytes of `fd` (none: the file is gone) straight into the outgoing frames, feeding
   * `hash` if given; false when the file had fewer (the rest is sent as zeros, as promised).
   */
  const sendBytes = async (fd: number | undefined, size: number, hash?: Hash): Promise<boolean> => {
    let complete = true;
    for (let position = 0; position < size;) {
      await room();
      const take = Math.min(MAX_DATA_PAYLOAD - used, size - position);
      const read = fd === undefined ? 0 : readSync(fd, frame, used, take, position);
      if (read < take) {
        frame.fill(0, used + read, used + take);
        complete = false;
      }
      hash?.update(frame.subarray(used, used + take));
      used += take;
      position += take;
    }
    return complete;
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
      while (!sync.finished && (needFull || needListing || dirty.size > 0 || conflictCopies.length > 0)) {
        const listing = needListing && !needFull;
        const detectedAt = listing ? Date.now() : firstChangeAt ?? Date.now();
        if (!listing) firstChangeAt = undefined;
        // a listing is a batch that changes nothing: its hash says whether what it removed was all
        // (conflict copies wait for the next batch)
        const copies = listing ? 0 : await sendConflictCopies();
        const files = copies + (needFull ? await sendFull() : listing ? await sendListing() : await sendChanges());
        batch++;
        const hash = treeHash(sent);
        await sendRecord({ op: 'batch', batch, files, hash, detectedAt });
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
    await sendRecord({ op: 'full-begin' });
    const next = new Map<string, TreeEntry>();
    for (const path of [...entries.keys()].sort()) await sendEntry(path, entries.get(path)!, next);
    await sendRecord({ op: 'full-end' });
    sent = next;
    return entries.size;
  };

  /** What the target should have, entry by entry with digests: it answers with the paths that differ. */
  const sendListing = async () => {
    needListing = false;
    await sendRecord({ op: 'verify-begin' });
    for (const path of [...sent.keys()].sort()) {
      const entry = sent.get(path)!;
      await sendRecord({ op: 'verify', path, type: entry.type, mode: entry.mode, digest: entry.digest });
    }
    await sendRecord({ op: 'verify-end' });
    return 0;
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
      await sendRecord(op.op === 'delete' ? { ...op, ...baseOf(op.path, true) } : op);
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
        await sendRecord({ op: 'conflict', path: copy.path, mode: copy.mode, size });
        await sendBytes(fd, size);
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
      await sendRecord({ op: 'mkdir', path, mode: entry.mode, ...base });
      into.set(path, entry);
      return;
    }
    if (entry.type === 'l') {
      const target = readLink(join(root, path));
      if (target === undefined) return changed(path);
      await sendRecord({ op: 'symlink', path, target, ...base });
      into.set(path, entry);
      return;
    }
    into.set(path, { ...entry, digest: await sendFile(path, entry, base) });
  };

  /**
   * Streams a file's bytes, read straight into the outgoing frames; returns the digest of what was
   * sent (a file that changed meanwhile is marked to send again). A small file is read whole
   * first and hashed in one call: a hash object per file cost more than hashing its bytes.
   */
  const sendFile = async (path: string, entry: TreeEntry, base: { base?: string | null } = {}): Promise<string> => {
    if (entry.size > MAX_SYNC_FILE_BYTES) throw new Error(`${path} is ${entry.size} bytes; den syncs files of at most ${MAX_SYNC_FILE_BYTES} bytes, so exclude it.`);
    const known = twoWay && entry.digest !== '' ? { digest: entry.digest } : {};
    await sendRecord({ op: 'write', path, mode: entry.mode, size: entry.size, ...base, ...known });
    let fd: number | undefined;
    let before: Stats | undefined;
    try {
      fd = openSync(join(root, path), 'r');
      before = fstatSync(fd);
    } catch {
      // gone since the scan: send the promised bytes as zeros; the change that removed it follows
    }
    let complete = fd !== undefined;
    let digest: string;
    let after: Stats | undefined;
    try {
      if (entry.size <= SMALL_FILE_BYTES) {
        // one byte more than expected tells a file that grew since the scan
        const read = fd === undefined ? 0 : readSync(fd, smallFile, 0, entry.size + 1, 0);
        if (read !== entry.size) complete = false;
        if (read < entry.size) smallFile.fill(0, read, entry.size);
        const bytes = smallFile.subarray(0, entry.size);
        digest = hashOnce('sha256', bytes);
        await send(bytes);
      } else {
        const hash = createHash('sha256');
        if (!(await sendBytes(fd, entry.size, hash))) complete = false;
        digest = hash.digest('hex');
      }
      if (fd !== undefined) after = fstatSync(fd);
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
    // a file that changed while it was read goes again in the next batch
    if (after && (after.size !== entry.size || after.mtimeMs !== before!.mtimeMs || after.ctimeMs !== before!.ctimeMs)) complete = false;
    if (!complete || (entry.digest !== '' && digest !== entry.digest)) changed(path);
    else scanner.remember(path, after!, digest);
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
