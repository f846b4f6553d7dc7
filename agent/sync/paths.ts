import { isAbsolute, join } from 'node:path';

/** A sync folder as an agent names it: `~` and `~/...` are the agent's HOME; anything else must be absolute. */
export function resolveRoot(root: string, home: string): string {
  if (root === '~') return home;
  if (root.startsWith('~/')) return join(home, root.slice(2));
  if (!isAbsolute(root)) return join(home, root);
  return root;
}

/** A failed file operation as a sentence that tells the owner what to do. */
export function syncErrorMessage(error: unknown, root: string): string {
  const failure = error as NodeJS.ErrnoException;
  const where = failure.path ?? root;
  switch (failure.code) {
    case 'EACCES':
    case 'EPERM':
      return `The service may not write ${where}; make ${root} writable by the service's user, or sync to another folder.`;
    case 'EROFS':
      return `${where} is on a read-only file system in the service; sync to a writable folder.`;
    case 'ENOSPC':
    case 'EDQUOT':
      return `The disk holding ${root} in the service is full (${failure.code} writing ${where}); free space there or sync less (exclude what the service does not need), then run \`den sync restart\`.`;
    case 'ENOENT':
      return `${where} does not exist; create it, or fix the sync path in the template.`;
    case 'ENOTDIR':
      return `A part of ${where} is a file, not a folder; fix the sync path in the template.`;
    default:
      return `Syncing ${root} failed: ${failure.message}.`;
  }
}
