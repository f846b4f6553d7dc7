import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NetworkHolder, TrackedProcess, WorkspacePaths } from './state.ts';
import { isAlive, procStartTime, spawnTracked } from './processes.ts';
import { holderArgs } from './sandbox.ts';

/** bwrap sets the namespaces up in a few milliseconds; beyond this it is stuck or failed */
const HOLDER_READY_TIMEOUT_MS = 5_000;
const HOLDER_POLL_MS = 5;

/**
 * Starts the holder of a workspace's user and network namespaces (see holderArgs) and resolves
 * once its `sleep` runs inside them: bwrap has written the uid map and brought `lo` up by then,
 * so nsenter can join at once. `uid` is the workspace's unprivileged uid (den runs as root).
 */
export async function startHolder(paths: WorkspacePaths, uid: number | undefined): Promise<NetworkHolder> {
  const tracked = await spawnTracked({
    argv: holderArgs(), env: { PATH: '/usr/bin:/bin' }, cwd: '/', uid,
    logFile: join(paths.logs, 'network.log'), specHash: 'holder',
  });
  const deadline = Date.now() + HOLDER_READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const nsPid = sleepingChild(tracked);
    if (nsPid !== undefined) return { ...tracked, nsPid };
    if (!isAlive(tracked)) break;
    await new Promise((resolve) => setTimeout(resolve, HOLDER_POLL_MS));
  }
  throw new Error(`The workspace's network sandbox (bubblewrap) did not start; see ${join(paths.logs, 'network.log')}.`);
}

/** True when the holder and the process inside its namespaces still run. */
export function holderAlive(holder: NetworkHolder | undefined): holder is NetworkHolder {
  return holder !== undefined && isAlive(holder) && procStartTime(holder.nsPid) !== null;
}

/** bwrap's child once it has exec'd `sleep` (setup done), else undefined. */
function sleepingChild(tracked: TrackedProcess): number | undefined {
  try {
    const children = readFileSync(`/proc/${tracked.pid}/task/${tracked.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    for (const child of children) {
      if (readFileSync(`/proc/${child}/comm`, 'utf8').trim() === 'sleep') return Number(child);
    }
  } catch {
    // not there yet, or already gone
  }
  return undefined;
}
