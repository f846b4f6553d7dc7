import { existsSync, lstatSync, readlinkSync } from 'node:fs';
import { dirname, relative, resolve, isAbsolute } from 'node:path';

export const BWRAP_PATH = '/usr/bin/bwrap';

/** Where the home is mounted inside the sandbox (outside it lives in the data dir). */
export const SANDBOX_HOME = '/home/den';

export interface SandboxRequest {
  /** bound read-write at SANDBOX_HOME */
  home: string;
  /** bound read-write at /tmp */
  tmp: string;
  /** extra paths bound read-only (the agent's code, the Node runtime) */
  readOnly: string[];
  /** paths hidden behind an empty tmpfs (den's data dir: other homes, the database) */
  hidden: string[];
  hostname: string;
  /** working directory inside the sandbox (default SANDBOX_HOME) */
  chdir?: string;
}

/** System directories bound read-only into every sandbox when they exist. */
const SYSTEM_PATHS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc', '/opt'];

export function bwrapAvailable(): boolean {
  return existsSync(BWRAP_PATH);
}

/**
 * The bubblewrap argv prefix for one workspace process. The home is writable, the system and
 * the agent's code are read-only, the network is shared (the agent dials den on loopback), and
 * the process gets its own pid, ipc and uts namespaces. No --die-with-parent: workspaces
 * outlive a den restart by design.
 */
export function bwrapArgs(request: SandboxRequest): string[] {
  const args = [BWRAP_PATH, '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try',
    '--hostname', request.hostname, '--cap-drop', 'ALL', '--dev', '/dev', '--proc', '/proc'];
  const bound: string[] = [];
  for (const path of SYSTEM_PATHS) {
    if (!existsSync(path)) continue;
    const stat = lstatSync(path);
    if (stat.isSymbolicLink()) {
      args.push('--symlink', readlinkSync(path), path);
    } else {
      args.push('--ro-bind', path, path);
      bound.push(path);
    }
  }
  // /tmp before the read-only paths: a checkout under /tmp (CI clones, tests) must stay visible
  // through the workspace's own /tmp, and bwrap applies mounts in order.
  args.push('--bind', request.tmp, '/tmp');
  for (const path of request.readOnly) {
    if (!existsSync(path) || bound.some((parent) => isInside(parent, path))) continue;
    args.push('--ro-bind', path, path);
    bound.push(path);
  }
  for (const path of request.hidden) {
    if (existsSync(path) && bound.some((parent) => isInside(parent, path))) args.push('--tmpfs', path);
  }
  args.push('--bind', request.home, SANDBOX_HOME, '--chdir', request.chdir ?? SANDBOX_HOME, '--');
  return args;
}

/** The folders that hold the Node runtime, so a sandboxed `node` can load itself. */
export function nodeRuntimePaths(): string[] {
  return [dirname(dirname(process.execPath))];
}

function isInside(parent: string, path: string): boolean {
  const rel = relative(resolve(parent), resolve(path));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}
