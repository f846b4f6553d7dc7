import { existsSync, lstatSync, readlinkSync } from 'node:fs';
import { dirname, relative, resolve, isAbsolute } from 'node:path';

export const BWRAP_PATH = '/usr/bin/bwrap';
export const NSENTER_PATH = '/usr/bin/nsenter';

/** Where the home is mounted inside the sandbox (outside it lives in the data dir). */
export const SANDBOX_HOME = '/home/den';
/** The workspace user inside the sandbox (the uid den's images give their `den` user too). */
export const SANDBOX_UID = 1000;
/** Where the agent bundle (agent.mjs, its chunks, node-pty) is mounted read-only. */
export const SANDBOX_AGENT_DIR = '/run/den/agent';
/** Where the directory holding den's agent socket is mounted read-only. */
export const SANDBOX_SOCKET_DIR = '/run/den/socket';

export interface SandboxRequest {
  /** bound read-write at SANDBOX_HOME */
  home: string;
  /** bound read-write at /tmp */
  tmp: string;
  /** extra paths bound read-only at the same place (the Node runtime) */
  readOnly: string[];
  /** host path -> sandbox path, bound read-only (the agent bundle, the agent socket's directory) */
  mounts: Record<string, string>;
  /** paths hidden behind an empty tmpfs when a system path would show them (den's data dir, its checkout) */
  hidden: string[];
  hostname: string;
  /** working directory inside the sandbox (default SANDBOX_HOME), created by bwrap as the workspace user when missing */
  chdir?: string;
}

/** The workspace's network: the holder process whose user and network namespaces its processes join. */
export interface NetworkJoin {
  /** pid of a process inside the namespaces (the holder's `sleep`) */
  pid: number;
  /** den runs as root: switch to the workspace user while joining (else keep den's own uid) */
  asRoot: boolean;
}

/** System directories bound read-only into every sandbox when they exist. */
const SYSTEM_PATHS = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc', '/opt'];

export function bwrapAvailable(): boolean {
  return existsSync(BWRAP_PATH) && existsSync(NSENTER_PATH);
}

/**
 * The argv of a workspace's network holder: a `sleep` in a new user namespace (the workspace
 * user is SANDBOX_UID inside, the unprivileged uid it is spawned as outside) and a new network
 * namespace with only a loopback (bwrap brings `lo` up). Every other process of the workspace
 * joins these two namespaces, so the agent, startup scripts, terminals and services reach each
 * other on 127.0.0.1 and nothing else: not the host's listeners, not other workspaces'.
 * bwrap 0.8 cannot join a network namespace itself (no --netns), hence the holder and nsenter.
 */
export function holderArgs(): string[] {
  const args = [BWRAP_PATH, '--unshare-user', '--unshare-net', '--unshare-ipc', '--uid', String(SANDBOX_UID), '--gid', String(SANDBOX_UID)];
  systemMounts(args, ['/usr', '/bin', '/lib', '/lib64']);
  return [...args, '--', sleepPath(), 'infinity'];
}

/**
 * The nsenter prefix that puts a command into the workspace's user and network namespaces. As
 * root it also becomes the workspace user (uid SANDBOX_UID inside the holder's namespace, the
 * workspace's unprivileged uid outside); otherwise it keeps den's uid, which the holder maps.
 */
export function joinArgs(network: NetworkJoin): string[] {
  return [NSENTER_PATH, `--user=/proc/${network.pid}/ns/user`, `--net=/proc/${network.pid}/ns/net`,
    ...(network.asRoot ? [`--setuid=${SANDBOX_UID}`, `--setgid=${SANDBOX_UID}`] : ['--preserve-credentials']), '--'];
}

/**
 * The bubblewrap argv prefix for one workspace process (run after joinArgs). The home is
 * writable; the system, the Node runtime and the agent bundle are read-only; den's data dir and
 * checkout are not there. The process gets its own user (SANDBOX_UID, no capabilities), pid,
 * ipc and uts namespaces. No --die-with-parent: workspaces outlive a den restart by design.
 */
export function bwrapArgs(request: SandboxRequest): string[] {
  const args = [BWRAP_PATH, '--unshare-user', '--uid', String(SANDBOX_UID), '--gid', String(SANDBOX_UID),
    '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try',
    '--hostname', request.hostname, '--cap-drop', 'ALL', '--dev', '/dev', '--proc', '/proc'];
  const bound = systemMounts(args, SYSTEM_PATHS);
  // /tmp before the read-only paths: a Node runtime under /tmp must stay visible through the
  // workspace's own /tmp, and bwrap applies mounts in order.
  args.push('--bind', request.tmp, '/tmp');
  for (const path of request.hidden) {
    if (existsSync(path) && bound.some((parent) => isInside(parent, path))) args.push('--tmpfs', path);
  }
  for (const path of request.readOnly) {
    if (!existsSync(path) || bound.some((parent) => isInside(parent, path) && !request.hidden.some((h) => isInside(h, path)))) continue;
    args.push('--ro-bind', path, path);
  }
  for (const [from, to] of Object.entries(request.mounts)) args.push('--ro-bind', from, to);
  args.push('--bind', request.home, SANDBOX_HOME);
  if (request.chdir) args.push('--dir', request.chdir);
  args.push('--chdir', request.chdir ?? SANDBOX_HOME, '--');
  return args;
}

/** The folders that hold the Node runtime, so a sandboxed `node` can load itself. */
export function nodeRuntimePaths(): string[] {
  return [dirname(dirname(process.execPath))];
}

/** Binds the existing ones of `paths` read-only (symlinks as symlinks); returns the bound directories. */
function systemMounts(args: string[], paths: string[]): string[] {
  const bound: string[] = [];
  for (const path of paths) {
    if (!existsSync(path)) continue;
    const stat = lstatSync(path);
    if (stat.isSymbolicLink()) {
      args.push('--symlink', readlinkSync(path), path);
    } else {
      args.push('--ro-bind', path, path);
      bound.push(path);
    }
  }
  return bound;
}

function sleepPath(): string {
  return existsSync('/usr/bin/sleep') ? '/usr/bin/sleep' : '/bin/sleep';
}

function isInside(parent: string, path: string): boolean {
  const rel = relative(resolve(parent), resolve(path));
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}
