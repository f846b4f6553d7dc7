import { lstatSync, readdirSync, watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import type { Excludes } from './tree.ts';

/**
 * Watches a folder tree with one inotify watch per folder (fs.watch, not recursive): Node's
 * recursive mode on Linux misses changes after a symlink is replaced (measured on Node 24.21: a
 * symlink removed and a folder made at its path are never reported) and watches excluded folders
 * too, spending the watch limit on node_modules. Excluded folders are not watched here. Reports
 * each changed path relative to the root; a folder that appears is watched, with what it holds.
 * `onError` gets the first failure (ENOSPC when the watch limit is reached): the caller then
 * scans instead.
 */
export class TreeWatcher {
  private watchers = new Map<string, FSWatcher>();
  private failed = false;
  private readonly root: string;
  private readonly excludes: Excludes;
  private readonly onChange: (path: string) => void;
  private readonly onError: (error: unknown) => void;

  constructor(root: string, excludes: Excludes, onChange: (path: string) => void, onError: (error: unknown) => void) {
    this.root = root;
    this.excludes = excludes;
    this.onChange = onChange;
    this.onError = onError;
  }

  /** Watches the whole tree now; throws the first failure instead of calling onError. */
  start(): void {
    this.watchTree('', true);
  }

  get watchCount(): number {
    return this.watchers.size;
  }

  close(): void {
    this.failed = true;
    for (const watcher of this.watchers.values()) watcher.close();
    this.watchers.clear();
  }

  private watchTree(dir: string, throwing: boolean): void {
    if (this.failed || this.watchers.has(dir)) return;
    const absolute = join(this.root, dir);
    let watcher: FSWatcher;
    try {
      watcher = watch(absolute, (_event, name) => this.onEvent(dir, name?.toString()));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (dir !== '' && (code === 'ENOENT' || code === 'ENOTDIR')) return;
      if (throwing) throw error;
      return this.fail(error);
    }
    watcher.on('error', (error) => {
      // the folder itself went away: its parent reports that
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'EPERM') return this.unwatch(dir);
      this.fail(error);
    });
    this.watchers.set(dir, watcher);
    let entries;
    try {
      entries = readdirSync(absolute, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      if (!entry.isDirectory()) continue;
      const path = dir === '' ? entry.name : `${dir}/${entry.name}`;
      if (!this.excludes(path, true)) this.watchTree(path, throwing);
    }
  }

  private onEvent(dir: string, name: string | undefined): void {
    if (this.failed) return;
    if (!name) {
      // the kernel's queue overflowed: everything under dir may have changed
      this.onChange(dir);
      return;
    }
    const path = dir === '' ? name : `${dir}/${name}`;
    this.onChange(path);
    // a folder that appeared (made, or moved in) is watched with everything below it; one that went is forgotten
    if (this.watchers.has(path)) this.unwatchMissing(path);
    else if (isDirectory(join(this.root, path)) && !this.excludes(path, true)) this.watchTree(path, false);
  }

  private unwatchMissing(path: string): void {
    try {
      readdirSync(join(this.root, path));
    } catch {
      this.unwatch(path);
    }
  }

  private unwatch(dir: string): void {
    for (const [path, watcher] of this.watchers) {
      if (path === dir || path.startsWith(`${dir}/`)) {
        watcher.close();
        this.watchers.delete(path);
      }
    }
  }

  private fail(error: unknown): void {
    if (this.failed) return;
    this.close();
    this.onError(error);
  }
}

function isDirectory(path: string): boolean {
  try {
    return lstatSync(path).isDirectory();
  } catch {
    return false;
  }
}
