import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SyncRecord, SyncTargetOpen, SyncTargetStatus } from '../../protocol/sync.ts';
import { conflictCopyName, decideIncoming, folderSignature, signatureOf, type Signature } from './conflict.ts';
import { pairedSource } from './pair.ts';
import { sha256, TEMP_PREFIX, type TreeEntry, type TreeScanner } from './tree.ts';

type TwoWay = NonNullable<SyncTargetOpen['twoWay']>;

/**
 * The target's half of two-way sync (ADR 0027): before an incoming change is applied it checks
 * the path against the change's `base` (agent/sync/conflict.ts decides), and after it tells the
 * source on this agent what the other side now has, so that source neither sends it back nor
 * bases its next change on a stale version.
 */
export class TwoWayTarget {
  private readonly root: string;
  private readonly scanner: TreeScanner;
  private readonly twoWay: TwoWay;
  private readonly report: (status: SyncTargetStatus) => void;
  private stashes = 0;

  constructor(root: string, scanner: TreeScanner, twoWay: TwoWay, report: (status: SyncTargetStatus) => void) {
    this.root = root;
    this.scanner = scanner;
    this.twoWay = twoWay;
    this.report = report;
  }

  /**
   * Before a write's bytes arrive: undefined to apply it, or (the workspace's side of a conflict,
   * where the local file stays) the relative path beside it the incoming bytes go to instead.
   */
  beforeWrite(record: Extract<SyncRecord, { op: 'write' }>, fullCopy: boolean): string | undefined {
    if (fullCopy || record.base === undefined) return undefined;
    const incoming = record.digest === undefined ? undefined : `f:${record.digest}`;
    return this.check(record.path, record.base, incoming) ? undefined : conflictCopyName(record.path, new Date());
  }

  /** After a write landed: at `path`, or as the conflict copy `keptAt` when the local file stayed. */
  afterWrite(path: string, entry: TreeEntry, keptAt?: string): void {
    const source = this.source();
    if (keptAt === undefined) {
      source?.setKnown(path, entry);
      return;
    }
    // the other side has the incoming version; this side's goes back to it
    source?.setKnown(path, entry);
    source?.touch(path);
    this.report({ type: 'conflict', path, copy: keptAt, kept: 'local' });
  }

  /** A conflict copy the other side sent (its version, which this side's replaced there) was written at `copy`. */
  copyReceived(path: string, copy: string): void {
    this.report({ type: 'conflict', path, copy, kept: 'local' });
  }

  /** Before mkdir, symlink or delete: whether to apply it (false: the local version stays, and was reported). */
  beforeChange(record: Extract<SyncRecord, { op: 'mkdir' | 'symlink' | 'delete' }>, fullCopy: boolean): boolean {
    if (fullCopy || record.base === undefined) return true;
    if (record.op === 'delete' && this.scanner.describe(record.path)?.type === 'd') return this.checkFolderDelete(record.path, record.base);
    const incoming = record.op === 'delete' ? null : record.op === 'mkdir' ? 'd' : `l:${sha256(record.target)}`;
    if (this.check(record.path, record.base, incoming)) return true;
    const source = this.source();
    if (record.op === 'delete') source?.setKnown(record.path, undefined);
    else source?.setKnown(record.path, record.op === 'mkdir' ? { type: 'd', mode: record.mode, size: 0, digest: '' } : { type: 'l', mode: 0, size: 0, digest: sha256(record.target) });
    source?.touch(record.path);
    this.report({ type: 'conflict', path: record.path, copy: null, kept: 'local' });
    return false;
  }

  /** After any other op was applied: what the other side now has. */
  afterChange(record: SyncRecord): void {
    const source = this.source();
    if (!source) return;
    switch (record.op) {
      case 'mkdir':
        return source.setKnown(record.path, { type: 'd', mode: record.mode, size: 0, digest: '' });
      case 'symlink':
        return source.setKnown(record.path, { type: 'l', mode: 0, size: 0, digest: sha256(record.target) });
      case 'chmod': {
        const known = source.known(record.path);
        if (known && known.type !== 'l') source.setKnown(record.path, { ...known, mode: record.mode });
        return;
      }
      case 'delete':
        return source.setKnown(record.path, undefined);
      case 'rename':
        return source.moveKnown(record.from, record.to);
      case 'full-end':
        return source.resetKnown();
      default:
    }
  }

  private source() {
    return pairedSource(this.twoWay.pair);
  }

  /** Applies the rule to one path; true when the incoming change goes ahead (having kept a replaced local file when it must). */
  private check(path: string, base: Signature, incoming: Signature | undefined): boolean {
    const entry = this.scanner.describe(path);
    const decision = decideIncoming(this.twoWay.wins, { base, incoming, local: signatureOf(entry), known: signatureOf(this.source()?.known(path)) });
    if (decision.saveLocal && entry) this.keepForTheOtherSide(path, entry);
    else if (decision.conflict && decision.apply) this.report({ type: 'conflict', path, copy: null, kept: 'incoming' });
    return decision.apply;
  }

  /** A folder deleted on the other side: what changed under it here is kept (workspace) or sent back as conflict copies first (service). */
  private checkFolderDelete(path: string, base: Signature): boolean {
    const local = new Map<string, TreeEntry>();
    this.scanner.scanPath(path, local);
    // unchanged since the state the other side deleted it from
    if (folderSignature(local, path) === base) return true;
    const source = this.source();
    if (this.twoWay.wins === 'incoming') {
      const unsent = [...local].filter(([inside, entry]) => inside !== path && signatureOf(entry) !== signatureOf(source?.known(inside)));
      for (const [inside, entry] of unsent) if (entry.type === 'f') this.keepForTheOtherSide(inside, entry);
      // the files come back as conflict copies (reported where they land); what else changed is lost, and said
      if (unsent.some(([, entry]) => entry.type !== 'f')) this.report({ type: 'conflict', path, copy: null, kept: 'incoming' });
      return true;
    }
    source?.setKnown(path, undefined);
    source?.touch(path);
    this.report({ type: 'conflict', path, copy: null, kept: 'local' });
    return false;
  }

  /** Copies a local file about to be replaced aside (excluded from sync) and has the source on this agent send it as a conflict copy. */
  private keepForTheOtherSide(path: string, entry: TreeEntry): void {
    const source = this.source();
    if (!source) return;
    const stash = join(this.root, `${TEMP_PREFIX}conflict-${process.pid}-${++this.stashes}`);
    copyFileSync(join(this.root, path), stash);
    source.sendConflictCopy(path, stash, entry.mode);
  }
}
