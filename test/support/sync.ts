import { expect } from 'vitest';
import type { SyncStatus } from '../../protocol/sync.ts';
import type { Api } from './users.ts';

const SYNC_TIMEOUT_MS = 30_000;

/** Reading a workspace's syncs through the API, and waiting for one to converge. */
export function syncProbe(client: Api, owner: string, timeoutMs = SYNC_TIMEOUT_MS) {
  /** The sync of `service` (the one into `to` when the service has several). */
  async function syncOf(workspace: string, service: string, to?: string): Promise<SyncStatus> {
    const response = await client.get(`/api/v1/workspaces/${owner}/${workspace}/sync`);
    expect(response.status, JSON.stringify(response.json)).toBe(200);
    const found = (response.json.items as SyncStatus[]).find((item) => item.service === service && (to === undefined || item.to === to));
    if (!found) throw new Error(`no sync of ${service}${to ? ` into ${to}` : ''}: ${JSON.stringify(response.json)}`);
    return found;
  }

  /** Waits until the sync is watching with nothing pending and both hashes equal (after `since`, a batch number). */
  async function settled(workspace: string, service: string, since = 0, to?: string): Promise<SyncStatus> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const status = await syncOf(workspace, service, to);
      if (status.state === 'error') throw new Error(`the sync stopped: ${status.lastError}`);
      if (status.state === 'watching' && status.inSync && status.pendingFiles === 0 && (status.lastApplied?.batch ?? 0) > since) return status;
      if (Date.now() > deadline) throw new Error(`the sync of ${service} did not settle within ${timeoutMs} ms: ${JSON.stringify(status)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  return { syncOf, settled };
}

/** Every path under `dir` with its type, mode, symlink target and content hash, sorted: the same listing in any container. */
export const treeListing = (dir: string, prune: string) => `cd ${dir} && find . ${prune} -mindepth 1 -printf '%y %m %p -> %l\\n' | sort && find . ${prune} -type f -print0 | sort -z | xargs -0 -r sha256sum`;

/** The shell script of the convergence cases: creates, excludes, symlinks, a mode and a rename in `~/src`. */
export const FIRST_CHANGES = [
  'set -e; cd ~/src',
  'mkdir -p lib/deep node_modules/dep && echo dep > node_modules/dep/index.js && echo noise > debug.log && echo kept > keep.log',
  'echo one > lib/deep/a.txt && echo two > lib/b.txt && printf "#!/bin/sh\\necho run\\n" > run.sh && chmod 755 run.sh',
  'ln -s lib/b.txt link-to-b && ln -s missing dangling',
  'mv first.txt lib/renamed.txt',
].join('\n');

/** Then deletes, a chmod, a symlink replaced, and a burst like a branch switch: 1,000 files over 20 folders, some removed and renamed at once. */
export const BURST_CHANGES = [
  'set -e; cd ~/src',
  'rm -r lib/deep && chmod 600 lib/b.txt && rm link-to-b && ln -s lib/renamed.txt link-to-b',
  'for d in $(seq 0 19); do mkdir -p burst/p$d; done',
  'for i in $(seq 0 999); do echo "file $i" > burst/p$((i % 20))/f$i.ts; done',
  'for i in $(seq 0 3 999); do rm burst/p$((i % 20))/f$i.ts; done',
  'for i in $(seq 1 3 999); do mv burst/p$((i % 20))/f$i.ts burst/p$((i % 20))/r$i.ts; done',
].join('\n');

/** The excludes the convergence cases use, and the `find` prune that leaves the same paths out. */
export const MIRROR_EXCLUDE = ['node_modules', '*.log', '!keep.log'];
export const MIRROR_PRUNE = "\\( -name node_modules -o -name '*.log' ! -name keep.log \\) -prune -o";
