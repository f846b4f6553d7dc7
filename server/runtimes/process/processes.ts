import { spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import type { TrackedProcess } from './state.ts';

export interface SpawnRequest {
  argv: string[];
  env: Record<string, string>;
  cwd: string;
  /** stdout and stderr go here (a file, not a pipe, so the process survives a server exit) */
  logFile: string;
  specHash: string;
  /** run as this uid and gid (den as root starting a workspace's holder); supplementary groups are dropped */
  uid?: number;
  /** called when the process exits while this server runs (a restarted server cannot learn it) */
  onExit?: (code: number | null, signal: NodeJS.Signals | null) => void;
}

/**
 * Starts a detached process in its own process group. It is not tied to the server's lifetime:
 * workspaces keep running when den restarts, and the state file lets the next server find them.
 */
export function spawnTracked(request: SpawnRequest): Promise<TrackedProcess> {
  const fd = openSync(request.logFile, 'a');
  try {
    const child = spawn(request.argv[0], request.argv.slice(1), {
      cwd: request.cwd,
      env: request.env,
      detached: true,
      stdio: ['ignore', fd, fd],
      ...(request.uid !== undefined ? { uid: request.uid, gid: request.uid } : {}),
    });
    return new Promise((resolve, reject) => {
      child.once('error', (error) => reject(new Error(`Cannot start ${request.argv[0]}: ${error.message}.`, { cause: error })));
      if (request.onExit) child.once('exit', request.onExit);
      child.once('spawn', () => {
        child.unref();
        const pid = child.pid!;
        resolve({ pid, startTime: procStartTime(pid), specHash: request.specHash });
      });
    });
  } finally {
    closeSync(fd);
  }
}

/** True when any process of the tracked group still runs (and the leader is not a reused pid). */
export function isAlive(tracked: TrackedProcess | undefined): boolean {
  if (!tracked) return false;
  try {
    process.kill(-tracked.pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const now = procStartTime(tracked.pid);
  if (now !== null) return tracked.startTime === null || now === tracked.startTime;
  // The leader is gone but the group is not empty: members left behind (bwrap's outer process
  // exits on SIGTERM before the sandbox does) or zombies waiting for an init that reaps slowly.
  // Only members that still run count.
  return groupHasRunningMember(tracked.pid);
}
/** SIGTERM to the whole group, then SIGKILL after `graceMs`; resolves when nothing is left. */
export async function stopGroup(tracked: TrackedProcess | undefined, graceMs: number): Promise<void> {
  if (!isAlive(tracked)) return;
  signalGroup(tracked!.pid, 'SIGTERM');
  if (await waitFor(() => !isAlive(tracked), graceMs)) return;
  signalGroup(tracked!.pid, 'SIGKILL');
  await waitFor(() => !isAlive(tracked), 5_000);
}

/** Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), or null. */
export function procStartTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name may hold spaces and parentheses; fields resume after the last ')'
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const state = fields[0];
    if (state === 'Z' || state === 'X') return null;
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

function groupHasRunningMember(pgid: number): boolean {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return true;
  }
  for (const entry of entries) {
    if (entry.charCodeAt(0) < 48 || entry.charCodeAt(0) > 57) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') return true;
    } catch {
      // exited while we looked
    }
  }
  return false;
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return condition();
}
