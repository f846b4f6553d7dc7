import type { BatchOp } from './batch.ts';
import { CONFLICT_MARK, treeHash, type TreeEntry } from './tree.ts';

/**
 * The conflict rule of two-way sync (ADR 0027). Each change carries `base`: what its sender
 * believed the receiver had at that path. A path changed on both sides before either change was
 * applied on the other shows up at the receiver as a local version that is neither that base nor
 * the incoming version. Then the workspace wins (it is where the developer edits):
 *  - at the workspace (`wins: 'local'`) the incoming change is not applied; an incoming file is
 *    written beside the local one as `NAME.den-conflict-<time>` and the conflict is reported;
 *  - at the service (`wins: 'incoming'`) the workspace's change is applied; a local file that has
 *    not been sent yet is sent first as a conflict copy (the workspace writes and reports it), so
 *    neither version is lost. A local version already on its way is reported by the workspace
 *    when it arrives there.
 */

/** What a path holds, for comparing versions: `f:DIGEST`, `l:DIGEST`, `d`, or null when nothing is there. Modes are not compared. */
export type Signature = string | null;

export function signatureOf(entry: TreeEntry | undefined): Signature {
  if (!entry) return null;
  return entry.type === 'd' ? 'd' : `${entry.type}:${entry.digest}`;
}

/**
 * A folder's signature when it is deleted: `d:` and the hash of everything under it, so the
 * receiver sees a file changed inside a folder the other side removed.
 */
export function folderSignature(tree: ReadonlyMap<string, TreeEntry>, path: string): Signature {
  const prefix = `${path}/`;
  return `d:${treeHash(new Map([...tree].filter(([inside]) => inside.startsWith(prefix))))}`;
}

export interface IncomingChange {
  /** what the sender believed this side had before the change */
  base: Signature;
  /** what the path holds after the change; undefined when not known before its bytes arrive */
  incoming: Signature | undefined;
  /** what the path holds on this side's disk now */
  local: Signature;
  /** what this side's source last sent for the path (or learnt the other side has) */
  known: Signature;
}

export interface ConflictDecision {
  /** apply the incoming change here */
  apply: boolean;
  /** both sides changed the path */
  conflict: boolean;
  /** send this side's file to the other side as a conflict copy before it is replaced */
  saveLocal: boolean;
}

export function decideIncoming(wins: 'local' | 'incoming', change: IncomingChange): ConflictDecision {
  const { base, incoming, local, known } = change;
  if (local === base || (incoming !== undefined && local === incoming)) return { apply: true, conflict: false, saveLocal: false };
  if (wins === 'local') return { apply: false, conflict: true, saveLocal: false };
  // this side's version was already sent: the other side keeps it and reports the conflict
  if (local === known) return { apply: true, conflict: false, saveLocal: false };
  return { apply: true, conflict: true, saveLocal: local !== null && local.startsWith('f:') };
}

/** `dir/name.txt` -> `dir/name.txt.den-conflict-2026-12-07T04-30-12-345Z`: sorts by time, no colons (editors and Windows shares choke on them). */
export function conflictCopyName(path: string, at: Date): string {
  return `${path}${CONFLICT_MARK}${at.toISOString().replace(/[:.]/g, '-')}`;
}

/**
 * Two-way batches say a rename as a delete and a write: each path then carries its own `base`,
 * so a rename that crosses an edit of either path is seen as the conflict it is.
 */
export function withoutRenames(ops: readonly BatchOp[], now: ReadonlyMap<string, TreeEntry>): BatchOp[] {
  const deletes: BatchOp[] = [];
  const sends: BatchOp[] = [];
  const rest: BatchOp[] = [];
  for (const op of ops) {
    if (op.op !== 'rename') {
      rest.push(op);
      continue;
    }
    deletes.push({ op: 'delete', path: op.from });
    const entry = now.get(op.to);
    if (entry) sends.push({ op: 'send', path: op.to, entry });
  }
  return [...deletes, ...rest, ...sends];
}
