// The sync's full copy between two folders in one process (`node bench/sync-pair.ts`): the
// workspace agent's sync-source channel and a service agent's sync-target channel joined the way
// the server joins them (agent/sync/sync.test.ts's harness), no server, no containers. For
// profiling the agents' side of the initial copy (`node --cpu-prof bench/sync-pair.ts`); the
// reference in the same run is `cp -a` of the same tree on the same disk.
//
//   node bench/sync-pair.ts [--files 10000] [--mb 200] [--dir /dev/shm]
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_CHANNEL_WINDOW } from '../protocol/agent.ts';
import { LineSplitter, syncTargetStatusSchema, type SyncTargetStatus } from '../protocol/sync.ts';
import type { ChannelHandler } from '../agent/exec.ts';
import { openSyncSource } from '../agent/sync/source.ts';
import { openSyncTarget } from '../agent/sync/target.ts';
import { numberOption, round, writeTree } from './support.ts';

const FILES = numberOption('--files', 10_000);
const MEGABYTES = numberOption('--mb', 200);
const base = mkdtempSync(join(process.argv.includes('--dir') ? process.argv[process.argv.indexOf('--dir') + 1] : tmpdir(), 'den-bench-sync-pair-'));
const source = join(base, 'source');
const target = join(base, 'target');
writeTree(source, FILES, MEGABYTES);
execFileSync('sync');
const results: Record<string, unknown> = { files: FILES, mb: MEGABYTES, loadavg_start: loadavg() };
try {
  const cpStarted = performance.now();
  execFileSync('cp', ['-a', source, join(base, 'by-cp')]);
  results.cp_ms = round(performance.now() - cpStarted);
  // kept until the end: ext4 makes new files slowly for 30 s after many were removed (bench/sync.ts says why)

  const statuses: SyncTargetStatus[] = [];
  const targetLines = new LineSplitter(1 << 20, (line) => statuses.push(syncTargetStatusSchema.parse(JSON.parse(line))));
  const context = (send: ChannelHandler['onData']) => ({ send, baseEnv: () => ({}), home: () => base });
  let sourceHandler: ChannelHandler | undefined;
  const cpu = process.cpuUsage();
  const started = performance.now();
  const done = new Promise<SyncTargetStatus>((resolve) => {
    const targetHandler: ChannelHandler = openSyncTarget(2, { kind: 'sync-target', root: target, exclude: [] }, DEFAULT_CHANNEL_WINDOW, {
      ...context(() => {}),
      send(frame) {
        if (frame.type === 'data') {
          targetLines.push(frame.payload);
          const last = statuses.at(-1);
          if (last) resolve(last);
          queueMicrotask(() => targetHandler.onWindow(frame.payload.byteLength));
        } else if (frame.type === 'window') sourceHandler!.onWindow(frame.bytes);
      },
    }, () => {});
    sourceHandler = openSyncSource(1, { kind: 'sync-source', root: source, exclude: [] }, DEFAULT_CHANNEL_WINDOW, {
      ...context(() => {}),
      send(frame) {
        if (frame.type === 'data') {
          const payload = Buffer.from(frame.payload);
          queueMicrotask(() => targetHandler.onData(payload));
        } else if (frame.type === 'stderr') queueMicrotask(() => sourceHandler!.onWindow(frame.payload.byteLength));
      },
    }, () => {});
  });
  const applied = await done;
  results.pair_ms = round(performance.now() - started);
  const used = process.cpuUsage(cpu);
  results.pair_cpu_ms = round((used.user + used.system) / 1000);
  results.applied = applied;
  results.vs_cp = round(Number(results.pair_ms) / Number(results.cp_ms));
  sourceHandler!.abort();
} finally {
  rmSync(base, { recursive: true, force: true });
  results.loadavg_end = loadavg();
}
process.stdout.write(`${JSON.stringify(results)}\n`);
process.exit(0);
