import { z } from 'zod';

/**
 * Live sync from a workspace folder into an environment service, driven by the server between
 * two of the workspace's agents (ADR 0023). The server opens a `sync-source` channel on the
 * workspace's agent and a `sync-target` channel on the service's agent and pipes the first's
 * DATA into the second, so every byte keeps the link's credit flow control end to end.
 *
 *  - sync-source DATA (to the server, piped to the target): the op stream, records of
 *      u32 header length (big endian) | header JSON (`syncRecordSchema`) | body
 *    where only `write` has a body, of exactly `size` bytes. Records arrive in the order the
 *    target must apply them; a `batch` record closes a batch and carries the hash of the tree
 *    the source has sent so far.
 *  - sync-source STDERR (to the server): `syncSourceStatusSchema` JSON lines (watch mode,
 *    pending files, each batch's hash, errors).
 *  - sync-source stdin (from the server): `syncSourceCommandSchema` JSON lines (resync, resend).
 *  - sync-target DATA (to the server): `syncTargetStatusSchema` JSON lines (each applied batch
 *    with the hash the target computed from its own disk, or the error that stopped it).
 *
 * Two-way (ADR 0027): the server also opens a `sync-source` on the service's agent (`initial:
 * known`: changes only) piped into a `sync-target` on the workspace's agent. On each agent the
 * source and the target of one sync share a pair key, so what a target applies is never sent
 * back; records then carry `base` (what the sender believed the receiver had) and the receiver
 * resolves a path changed on both sides by agent/sync/conflict.ts: the workspace's version wins.
 *
 * After the hashes disagreed (a file changed in the service, a write that did not land) the
 * source sends a listing of what it sent, `verify-begin`, a `verify` record per entry with its
 * digest, `verify-end`; the target compares it with its disk as it arrives, removes what the
 * listing lacks, and reports the paths that differ (`differs` lines, then `differs-end`); the
 * server hands them to the source (`resend`), which sends only those in its next batch. A
 * listing in which nothing differs while the hashes disagreed leads to a full copy (`resync`
 * with `full`).
 *
 * Both sides compute `treeHash` (agent/sync/tree.ts) the same way: sha256 over the sorted lines
 * `type NUL path NUL mode(octal) NUL digest LF`, where digest is the sha256 of a file's content
 * or of a symlink's target and empty for a folder, and excluded paths are left out.
 */

/** The longest record header; a longer one is a protocol violation. */
export const MAX_SYNC_HEADER_BYTES = 64 * 1024;
/** The longest status or command line either way. */
export const MAX_SYNC_LINE_BYTES = 64 * 1024;
/** The largest file the sync carries (a larger one is an error the owner sees, not a silent skip). */
export const MAX_SYNC_FILE_BYTES = 2 * 1024 * 1024 * 1024;
/** What `to` and the excluded patterns may be. */
const syncPath = z.string().min(1).max(4096);

/**
 * A path inside the synced folder: relative, `/`-separated, no `.` or `..` segment, no NUL.
 * The target also refuses to write through a symlink that leaves the folder.
 */
export const relativeSyncPathSchema = z.string().min(1).max(4096).refine(isSafeRelativePath, 'A synced path is relative to the synced folder and never leaves it.');

export function isSafeRelativePath(path: string): boolean {
  if (path.startsWith('/') || path.includes('\0') || path.endsWith('/')) return false;
  return path.split('/').every((segment) => segment !== '' && segment !== '.' && segment !== '..');
}

const mode = z.number().int().min(0).max(0o7777);
/** The source and the target of two-way sync on one agent share what the other side has under this key. */
const syncPairSchema = z.string().min(1).max(64);
/**
 * Two-way sync only: what the sender believed the receiver had at this path before the change
 * (`f:DIGEST`, `l:DIGEST`, `d`, or null for nothing), so the receiver sees a path that changed on
 * both sides (agent/sync/conflict.ts).
 */
const base = z.string().max(200).nullable().optional();

export const syncSourceOpenSchema = z.object({
  kind: z.literal('sync-source'),
  /** the folder to watch; `~/` is the agent's HOME */
  root: syncPath,
  /** gitignore patterns, relative to root */
  exclude: z.array(z.string().max(4096)).max(1000).default([]),
  /** two-way sync (agent protocol 1.5): the target on this agent with the same `pair` feeds what it applies into what this source knows the other side has */
  twoWay: z.object({
    pair: syncPairSchema,
    /** full: send the folder first (workspace to service); known: the folder is already the same on both sides, send only changes (service to workspace) */
    initial: z.enum(['full', 'known']),
  }).optional(),
});
export const syncTargetOpenSchema = z.object({
  kind: z.literal('sync-target'),
  /** the folder the source's tree is mirrored into; `~/` is the agent's HOME */
  root: syncPath,
  /** the same patterns as the source's: excluded paths in the service are left alone */
  exclude: z.array(z.string().max(4096)).max(1000).default([]),
  /** two-way sync (1.5): which version stays when a path changed on both sides (agent/sync/conflict.ts) */
  twoWay: z.object({
    pair: syncPairSchema,
    /** local: this side's version stays, the incoming one is written beside it (the workspace); incoming: the incoming version replaces this side's (the service) */
    wins: z.enum(['local', 'incoming']),
  }).optional(),
});
export type SyncSourceOpen = z.infer<typeof syncSourceOpenSchema>;
export type SyncTargetOpen = z.infer<typeof syncTargetOpenSchema>;

export const syncRecordSchema = z.discriminatedUnion('op', [
  /** `digest` (two-way): the sha256 of the bytes that follow, when the sender knew it before reading them */
  z.object({ op: z.literal('write'), path: relativeSyncPathSchema, mode, size: z.number().int().min(0).max(MAX_SYNC_FILE_BYTES), base, digest: z.string().max(128).optional() }),
  z.object({ op: z.literal('mkdir'), path: relativeSyncPathSchema, mode, base }),
  z.object({ op: z.literal('symlink'), path: relativeSyncPathSchema, target: z.string().min(1).max(4096), base }),
  z.object({ op: z.literal('chmod'), path: relativeSyncPathSchema, mode }),
  /** removes a file, a symlink or a whole folder */
  z.object({ op: z.literal('delete'), path: relativeSyncPathSchema, base }),
  /** two-way: the sender's own version of `path`, which an incoming change replaced there; the receiver keeps it beside its own as a conflict copy. Bytes follow, as for write. */
  z.object({ op: z.literal('conflict'), path: relativeSyncPathSchema, mode, size: z.number().int().min(0).max(MAX_SYNC_FILE_BYTES) }),
  z.object({ op: z.literal('rename'), from: relativeSyncPathSchema, to: relativeSyncPathSchema }),
  /** a full copy follows: everything not written, made or linked before `full-end` is removed (excluded paths stay) */
  z.object({ op: z.literal('full-begin') }),
  z.object({ op: z.literal('full-end') }),
  /** a listing of what the source sent follows (after the hashes disagreed); nothing is applied until verify-end */
  z.object({ op: z.literal('verify-begin') }),
  /** one entry the target should have: its type, mode and digest as `treeHash` hashes them */
  z.object({ op: z.literal('verify'), path: relativeSyncPathSchema, type: z.enum(['f', 'd', 'l']), mode, digest: z.string().max(128) }),
  /** the end of the listing: the target removes what it did not list and reports what differs */
  z.object({ op: z.literal('verify-end') }),
  /** the end of a batch: `hash` is the tree the source sent; `detectedAt` when its first change was seen (ms since the epoch) */
  z.object({ op: z.literal('batch'), batch: z.number().int().min(1), files: z.number().int().min(0), hash: z.string().max(128), detectedAt: z.number() }),
]);
export type SyncRecord = z.infer<typeof syncRecordSchema>;

export const syncWatchModeSchema = z.enum(['inotify', 'scan']);

export const syncSourceStatusSchema = z.discriminatedUnion('type', [
  /** how the source watches; `message` says why it scans when it does */
  z.object({ type: z.literal('watching'), mode: syncWatchModeSchema, message: z.string().max(4096).optional() }),
  z.object({ type: z.literal('pending'), files: z.number().int().min(0) }),
  z.object({ type: z.literal('batch'), batch: z.number().int().min(1), files: z.number().int().min(0), hash: z.string().max(128), detectedAt: z.number() }),
  z.object({ type: z.literal('error'), code: z.string().max(64), message: z.string().max(4096) }),
]);
export type SyncSourceStatus = z.infer<typeof syncSourceStatusSchema>;

/** The paths of one `differs` or `resend` line: as many as fit in MAX_SYNC_LINE_BYTES. */
const differingPaths = z.array(relativeSyncPathSchema).min(1).max(MAX_SYNC_LINE_BYTES / 4);

export const syncSourceCommandSchema = z.discriminatedUnion('type', [
  /** the hashes disagreed: send a listing of what was sent (or, with `full`, the whole tree again) */
  z.object({ type: z.literal('resync'), full: z.boolean().optional() }),
  /** these paths differ in the service: send them again in the next batch */
  z.object({ type: z.literal('resend'), paths: differingPaths }),
]);
export type SyncSourceCommand = z.infer<typeof syncSourceCommandSchema>;

export const syncTargetStatusSchema = z.discriminatedUnion('type', [
  /** paths of the listing that are missing or different on the service's disk */
  z.object({ type: z.literal('differs'), paths: differingPaths }),
  /** the listing was compared: `files` paths differed, `removed` were there without being listed */
  z.object({ type: z.literal('differs-end'), files: z.number().int().min(0), removed: z.number().int().min(0) }),
  z.object({ type: z.literal('applied'), batch: z.number().int().min(1), files: z.number().int().min(0), hash: z.string().max(128), detectedAt: z.number(), appliedAt: z.number() }),
  /** two-way: `path` changed on both sides; `copy` is where the losing version was kept on this side (null when it was not a file: a delete, a folder, a link) */
  z.object({ type: z.literal('conflict'), path: relativeSyncPathSchema, copy: relativeSyncPathSchema.nullable(), kept: z.enum(['local', 'incoming']) }),
  z.object({ type: z.literal('error'), code: z.string().max(64), message: z.string().max(4096) }),
]);
export type SyncTargetStatus = z.infer<typeof syncTargetStatusSchema>;

/** Encodes one record header (and the caller sends `size` body bytes after it for a write). */
export function encodeSyncRecord(record: SyncRecord): Uint8Array {
  const json = Buffer.from(JSON.stringify(record), 'utf8');
  if (json.byteLength > MAX_SYNC_HEADER_BYTES) throw new Error(`A sync record header is ${json.byteLength} bytes; the maximum is ${MAX_SYNC_HEADER_BYTES}.`);
  const out = Buffer.allocUnsafe(4 + json.byteLength);
  out.writeUInt32BE(json.byteLength, 0);
  json.copy(out, 4);
  return out;
}

export type SyncStreamEvent =
  | { type: 'record'; record: SyncRecord }
  | { type: 'body'; bytes: Uint8Array }
  | { type: 'body-end' };

/**
 * Incremental decoder of the op stream: feed it chunks as they arrive, it calls `emit` with each
 * record, the body bytes of a write as they come (never buffered whole) and the end of each body.
 * Holds at most one header in memory. Throws on a malformed or oversized header.
 */
export class SyncStreamDecoder {
  private header: Buffer[] = [];
  private headerBytes = 0;
  private headerLength: number | undefined;
  private bodyLeft = 0;
  private readonly emit: (event: SyncStreamEvent) => void;

  constructor(emit: (event: SyncStreamEvent) => void) {
    this.emit = emit;
  }

  /** true between records (an ended stream that is not idle was cut in the middle of one) */
  get idle(): boolean {
    return this.headerBytes === 0 && this.bodyLeft === 0 && this.headerLength === undefined;
  }

  push(chunk: Uint8Array): void {
    let offset = 0;
    while (offset < chunk.byteLength) {
      if (this.bodyLeft > 0) {
        const take = Math.min(this.bodyLeft, chunk.byteLength - offset);
        this.bodyLeft -= take;
        this.emit({ type: 'body', bytes: chunk.subarray(offset, offset + take) });
        offset += take;
        if (this.bodyLeft === 0) this.emit({ type: 'body-end' });
        continue;
      }
      const want = (this.headerLength === undefined ? 4 : this.headerLength) - this.headerBytes;
      const take = Math.min(want, chunk.byteLength - offset);
      this.header.push(Buffer.from(chunk.subarray(offset, offset + take)));
      this.headerBytes += take;
      offset += take;
      if (take < want) continue;
      const bytes = Buffer.concat(this.header);
      this.header = [];
      this.headerBytes = 0;
      if (this.headerLength === undefined) {
        const length = bytes.readUInt32BE(0);
        if (length === 0 || length > MAX_SYNC_HEADER_BYTES) throw new Error(`A sync record header of ${length} bytes is outside 1..${MAX_SYNC_HEADER_BYTES}.`);
        this.headerLength = length;
        continue;
      }
      this.headerLength = undefined;
      let parsed: unknown;
      try {
        parsed = JSON.parse(bytes.toString('utf8'));
      } catch {
        throw new Error('A sync record header is not JSON.');
      }
      const record = syncRecordSchema.safeParse(parsed);
      if (!record.success) throw new Error(`A sync record is malformed: ${record.error.issues[0]?.message ?? 'invalid'}.`);
      this.emit({ type: 'record', record: record.data });
      if (record.data.op === 'write' || record.data.op === 'conflict') {
        this.bodyLeft = record.data.size;
        if (this.bodyLeft === 0) this.emit({ type: 'body-end' });
      }
    }
  }
}

/** Splits a byte stream into lines of at most `max` bytes; a longer line throws. */
export class LineSplitter {
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private readonly max: number;
  private readonly emit: (line: string) => void;

  constructor(max: number, emit: (line: string) => void) {
    this.max = max;
    this.emit = emit;
  }

  push(chunk: Uint8Array): void {
    let start = 0;
    for (let newline = chunk.indexOf(10); newline >= 0; newline = chunk.indexOf(10, start)) {
      const piece = Buffer.from(chunk.subarray(start, newline));
      this.check(piece.byteLength);
      const line = Buffer.concat([...this.partial, piece]).toString('utf8');
      this.partial = [];
      this.partialBytes = 0;
      start = newline + 1;
      if (line.length > 0) this.emit(line);
    }
    if (start < chunk.byteLength) {
      this.check(chunk.byteLength - start);
      this.partial.push(Buffer.from(chunk.subarray(start)));
      this.partialBytes += chunk.byteLength - start;
    }
  }

  private check(more: number): void {
    if (this.partialBytes + more > this.max) throw new Error(`A sync status line is longer than ${this.max} bytes.`);
  }
}

// ---- the API: GET /api/v1/workspaces/:owner/:name/sync ----

export const syncStateSchema = z.enum(['initialising', 'watching', 'applying', 'error', 'waiting', 'shared']);
export type SyncState = z.infer<typeof syncStateSchema>;

export const syncStatusSchema = z.object({
  service: z.string(),
  from: z.string(),
  to: z.string(),
  /** initialising: the first full copy runs; watching: converged and waiting for changes; applying: a batch is on its way; error: stopped (see lastError); waiting: an agent is not connected yet; shared: the service sees the workspace's folder itself, nothing is copied (the process runtime; watchMessage says so) */
  state: syncStateSchema,
  /** inotify, or scan when the watch limits were reached (watchMessage says so) */
  watchMode: syncWatchModeSchema.nullable(),
  watchMessage: z.string().nullable(),
  /** changes seen in the workspace and not yet applied in the service */
  pendingFiles: z.number().int(),
  lastApplied: z.object({ at: z.string(), batch: z.number().int(), files: z.number().int(), latencyMs: z.number() }).nullable(),
  /** a full sentence, when the sync stopped */
  lastError: z.string().nullable(),
  sourceHash: z.string().nullable(),
  targetHash: z.string().nullable(),
  /** the last applied batch's hashes agree */
  inSync: z.boolean(),
  /** times the hashes disagreed and den compared both sides' listings */
  resyncs: z.number().int(),
  /** one-way: the workspace is mirrored into the service; two-way: changes in the service come back too */
  mode: z.enum(['one-way', 'two-way']),
  /** two-way: the last change from the service applied in the workspace */
  lastReturned: z.object({ at: z.string(), batch: z.number().int(), files: z.number().int(), latencyMs: z.number() }).nullable(),
  /** two-way: paths changed on both sides at once since the sync started (the workspace's version is kept) */
  conflicts: z.number().int(),
  lastConflict: z.object({ at: z.string(), path: z.string(), copy: z.string().nullable(), message: z.string() }).nullable(),
  /** afterSync: restart: when the service's process was last restarted after a sync, and its new pid */
  lastRestart: z.object({ at: z.string(), pid: z.number().int() }).nullable(),
  /** files sent again because the service's copy differed (over all resyncs) */
  resentFiles: z.number().int(),
});
export type SyncStatus = z.infer<typeof syncStatusSchema>;
export const syncStatusListSchema = z.object({ items: z.array(syncStatusSchema) });
export const syncRestartSchema = z.object({ service: z.string().min(1).max(63).optional() });
