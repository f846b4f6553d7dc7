import type { TreeEntry } from './tree.ts';

/**
 * Two-way sync puts a source and a target on each agent for the same folder (ADR 0027): the
 * workspace's agent sends the workspace's changes and applies the service's, the service's agent
 * the other way round. The target tells the source on its agent what it applied, so the source
 * does not send it back (no echo) and its next change's `base` is right; the source is found by
 * the pair key both were opened with.
 */
export interface PairedSource {
  /** what the other side has at `path`, as far as this agent knows */
  known(path: string): TreeEntry | undefined;
  /** the other side now has `entry` at `path` (undefined: nothing, with everything under it) */
  setKnown(path: string, entry: TreeEntry | undefined): void;
  /** a rename applied here was a rename there too */
  moveKnown(from: string, to: string): void;
  /** looks at `path` again and sends what differs (a conflict kept this side's version) */
  touch(path: string): void;
  /** after a full copy from the other side: what is on this disk is what it has */
  resetKnown(): void;
  /** sends the file at `stash` (inside the folder, excluded from sync) as the conflict copy of `path`, then removes it */
  sendConflictCopy(path: string, stash: string, mode: number): void;
}

const sources = new Map<string, PairedSource>();

/** Makes a source findable by its pair key; returns the function that forgets it. */
export function registerPairedSource(pair: string, source: PairedSource): () => void {
  sources.set(pair, source);
  return () => {
    if (sources.get(pair) === source) sources.delete(pair);
  };
}

export function pairedSource(pair: string): PairedSource | undefined {
  return sources.get(pair);
}

/** Removes `path` and everything under it from a tree map. */
export function forgetSubtree(tree: Map<string, TreeEntry>, path: string): void {
  for (const key of [...tree.keys()]) if (key === path || key.startsWith(`${path}/`)) tree.delete(key);
}

/** Moves `from` and everything under it to `to` in a tree map (what was at `to` is replaced). */
export function moveSubtree(tree: Map<string, TreeEntry>, from: string, to: string): void {
  const moved = [...tree].filter(([key]) => key === from || key.startsWith(`${from}/`));
  forgetSubtree(tree, from);
  forgetSubtree(tree, to);
  for (const [key, entry] of moved) tree.set(`${to}${key.slice(from.length)}`, entry);
}
