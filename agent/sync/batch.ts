import type { TreeEntry } from './tree.ts';

/** One step of a batch: a record to send as is, or an entry whose content goes out (mkdir, symlink or write). */
export type BatchOp =
  | { op: 'rename'; from: string; to: string }
  | { op: 'delete'; path: string }
  | { op: 'chmod'; path: string; mode: number }
  | { op: 'send'; path: string; entry: TreeEntry };

/**
 * What to send for a set of changed paths, given what the target has (`sent`) and what the
 * changed paths hold now (`now`: each changed path and, for a folder, everything under it).
 * Pure, so its ordering rules are unit-tested:
 *  - renames first (a file that vanished and reappeared elsewhere with the same content moves
 *    instead of being sent again), before any delete can remove the folder it leaves;
 *  - then deletes, only the topmost of a removed subtree (the target removes folders whole);
 *  - then creations and changes by path, so a folder is made before what it holds;
 *  - a path whose type changed is deleted, then created.
 */
export function planBatch(sent: ReadonlyMap<string, TreeEntry>, changedPaths: Iterable<string>, now: ReadonlyMap<string, TreeEntry>): { ops: BatchOp[] } {
  const removed = new Set<string>();
  for (const path of changedPaths) {
    const before = sent.get(path);
    if (!before) continue;
    if (!now.has(path)) removed.add(path);
    if (before.type === 'd') {
      const prefix = `${path}/`;
      for (const inside of sent.keys()) if (inside.startsWith(prefix) && !now.has(inside)) removed.add(inside);
    }
  }
  const creates: [string, TreeEntry][] = [];
  const chmods: BatchOp[] = [];
  for (const [path, entry] of now) {
    const before = sent.get(path);
    if (!before) creates.push([path, entry]);
    else if (before.type !== entry.type) {
      removed.add(path);
      creates.push([path, entry]);
    } else if (before.digest !== entry.digest) creates.push([path, entry]);
    else if (before.mode !== entry.mode) chmods.push({ op: 'chmod', path, mode: entry.mode });
  }

  // renames: a removed file whose content appears at a new path
  const removedByDigest = new Map<string, string[]>();
  for (const path of removed) {
    const before = sent.get(path)!;
    if (before.type !== 'f' || sent.get(path) === undefined || now.has(path)) continue;
    const list = removedByDigest.get(before.digest) ?? [];
    list.push(path);
    removedByDigest.set(before.digest, list);
  }
  const renames: BatchOp[] = [];
  const sends: BatchOp[] = [...chmods];
  for (const [path, entry] of creates) {
    const from = entry.type === 'f' && !sent.has(path) ? removedByDigest.get(entry.digest)?.shift() : undefined;
    if (from === undefined) {
      sends.push({ op: 'send', path, entry });
      continue;
    }
    removed.delete(from);
    renames.push({ op: 'rename', from, to: path });
    if (sent.get(from)!.mode !== entry.mode) sends.push({ op: 'chmod', path, mode: entry.mode });
  }

  const deletes = [...removed].sort().filter((path) => !hasAncestorIn(path, removed)).map((path): BatchOp => ({ op: 'delete', path }));
  sends.sort((a, b) => compare(pathOf(a), pathOf(b)));
  return { ops: [...renames, ...deletes, ...sends] };
}

function pathOf(op: BatchOp): string {
  return op.op === 'rename' ? op.to : op.path;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function hasAncestorIn(path: string, set: ReadonlySet<string>): boolean {
  for (let slash = path.lastIndexOf('/'); slash > 0; slash = path.lastIndexOf('/', slash - 1)) {
    if (set.has(path.slice(0, slash))) return true;
  }
  return false;
}
