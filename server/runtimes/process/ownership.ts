import { chmodSync, lchownSync, lstatSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { AppError } from '../../../protocol/errors.ts';

/**
 * Gives `dir` and everything under it to `uid` (group too) unless `dir` is already its: a home
 * made before the workspace had a uid of its own, or a service workdir den just created.
 * Symlinks are changed themselves, never followed (workspace code may have planted them).
 */
export function ensureOwnedBy(dir: string, uid: number): void {
  if (lstatSync(dir).uid === uid) return;
  const walk = (path: string): void => {
    lchownSync(path, uid, uid);
    const stat = lstatSync(path);
    if (!stat.isDirectory()) return;
    for (const entry of readdirSync(path)) walk(join(path, entry));
  };
  walk(dir);
}

/**
 * Lets other uids (each workspace's own) pass through den's data dir to their workspace's
 * folder: `dirs` get the search bit for others (not read: nothing can be listed), and the data
 * dir's parents must already allow it, or bubblewrap cannot bind the home.
 */
export function ensureTraversable(dataDir: string, dirs: string[]): void {
  for (let parent = dirname(dataDir); ; parent = dirname(parent)) {
    const mode = statSync(parent).mode;
    if ((mode & 0o001) === 0) {
      throw new AppError('RUNTIME_ERROR',
        `Workspaces cannot reach den's data dir ${dataDir}: ${parent} does not let other users pass (mode ${(mode & 0o777).toString(8)}). Use a data dir outside it (--data-dir), or run chmod o+x ${parent}.`);
    }
    if (parent === dirname(parent)) break;
  }
  for (const dir of [dataDir, ...dirs]) {
    const mode = statSync(dir).mode & 0o7777;
    if ((mode & 0o001) === 0) chmodSync(dir, mode | 0o001);
  }
}
