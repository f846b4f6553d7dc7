import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, readlinkSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_CHANNEL_WINDOW, type AgentFrame } from '../../protocol/agent.ts';
import { encodeSyncRecord, LineSplitter, syncSourceStatusSchema, syncTargetStatusSchema, type SyncRecord, type SyncSourceStatus, type SyncTargetStatus } from '../../protocol/sync.ts';
import type { ChannelHandler } from '../exec.ts';
import { openSyncSource } from './source.ts';
import { openSyncTarget } from './target.ts';
import { createExcludes, TreeScanner, treeHash } from './tree.ts';

/**
 * The two sync channels of the agent against real folders, joined the way the server joins them
 * (the source's DATA into the target, the target's window grants back to the source), without a
 * server: what arrives converges to the source tree, and both hashes say so.
 */
const CONVERGE_TIMEOUT_MS = 10_000;

interface Pair {
  source: string;
  target: string;
  sourceStatus: SyncSourceStatus[];
  targetStatus: SyncTargetStatus[];
  sourceHandler: ChannelHandler;
  targetHandler: ChannelHandler;
  closed: { source?: AgentFrame; target?: AgentFrame };
}

const dirs: string[] = [];
const handlers: ChannelHandler[] = [];
afterEach(() => {
  for (const handler of handlers.splice(0)) handler.abort();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function startPair(exclude: string[] = [], prepare?: (source: string, target: string) => void): Pair {
  const base = mkdtempSync(join(tmpdir(), 'den-sync-'));
  dirs.push(base);
  const source = join(base, 'source');
  const target = join(base, 'target');
  mkdirSync(source);
  prepare?.(source, target);
  const pair = { source, target, sourceStatus: [], targetStatus: [], closed: {} } as unknown as Pair;
  const sourceLines = new LineSplitter(1 << 20, (line) => pair.sourceStatus.push(syncSourceStatusSchema.parse(JSON.parse(line))));
  const targetLines = new LineSplitter(1 << 20, (line) => pair.targetStatus.push(syncTargetStatusSchema.parse(JSON.parse(line))));
  const home = base;
  pair.targetHandler = openSyncTarget(2, { kind: 'sync-target', root: target, exclude }, DEFAULT_CHANNEL_WINDOW, {
    send(frame) {
      if (frame.type === 'data') {
        targetLines.push(frame.payload);
        queueMicrotask(() => pair.targetHandler.onWindow(frame.payload.byteLength));
      } else if (frame.type === 'window') pair.sourceHandler.onWindow(frame.bytes);
      else if (frame.type === 'close' || frame.type === 'open_error') pair.closed.target = frame;
    },
    baseEnv: () => ({}),
    home: () => home,
  }, () => {});
  pair.sourceHandler = openSyncSource(1, { kind: 'sync-source', root: source, exclude }, DEFAULT_CHANNEL_WINDOW, {
    send(frame) {
      if (frame.type === 'data') {
        const payload = Buffer.from(frame.payload);
        queueMicrotask(() => pair.targetHandler.onData(payload));
      } else if (frame.type === 'stderr') {
        sourceLines.push(frame.payload);
        queueMicrotask(() => pair.sourceHandler.onWindow(frame.payload.byteLength));
      } else if (frame.type === 'close' || frame.type === 'open_error') pair.closed.source = frame;
    },
    baseEnv: () => ({}),
    home: () => home,
  }, () => {});
  handlers.push(pair.sourceHandler, pair.targetHandler);
  return pair;
}

/** Waits until the last applied batch's hash is the source's hash of the folder as it is now, and returns it. */
async function converged(pair: Pair, exclude: string[] = []): Promise<string> {
  const deadline = Date.now() + CONVERGE_TIMEOUT_MS;
  const expected = () => treeHash(new TreeScanner(pair.source, createExcludes(exclude)).scan());
  for (;;) {
    const applied = pair.targetStatus.filter((s) => s.type === 'applied').at(-1);
    const error = pair.targetStatus.find((s) => s.type === 'error') ?? pair.sourceStatus.find((s) => s.type === 'error');
    if (error) throw new Error(`the sync failed: ${JSON.stringify(error)}`);
    const want = expected();
    if (applied?.type === 'applied' && applied.hash === want && treeHash(new TreeScanner(pair.target, createExcludes(exclude)).scan()) === want) return want;
    if (Date.now() > deadline) throw new Error(`no convergence within ${CONVERGE_TIMEOUT_MS} ms; last applied ${JSON.stringify(applied)}, want ${want}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('sync channels between two folders', () => {
  it('copies the initial tree with modes and symlinks, then removes what the source does not have', async () => {
    const pair = startPair([], (source, target) => {
      mkdirSync(join(source, 'src/lib'), { recursive: true });
      writeFileSync(join(source, 'src/lib/a.js'), 'export const a = 1;\n');
      writeFileSync(join(source, 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
      symlinkSync('src/lib/a.js', join(source, 'link.js'));
      mkdirSync(join(target, 'stale'), { recursive: true });
      writeFileSync(join(target, 'stale/old.txt'), 'old');
    });
    await converged(pair);
    expect(readFileSync(join(pair.target, 'src/lib/a.js'), 'utf8')).toBe('export const a = 1;\n');
    expect(statSync(join(pair.target, 'run.sh')).mode & 0o777).toBe(0o755);
    expect(readlinkSync(join(pair.target, 'link.js'))).toBe('src/lib/a.js');
    expect(existsSync(join(pair.target, 'stale'))).toBe(false);
  });

  it('applies edits, deletes, renames, chmods and symlink changes in order', async () => {
    const pair = startPair([], (source) => {
      mkdirSync(join(source, 'dir/sub'), { recursive: true });
      writeFileSync(join(source, 'dir/sub/x.txt'), 'x');
      writeFileSync(join(source, 'keep.txt'), 'one');
      writeFileSync(join(source, 'moved.txt'), 'moving content');
    });
    await converged(pair);
    writeFileSync(join(pair.source, 'keep.txt'), 'two');
    renameSync(join(pair.source, 'moved.txt'), join(pair.source, 'dir/moved-here.txt'));
    rmSync(join(pair.source, 'dir/sub'), { recursive: true });
    chmodSync(join(pair.source, 'keep.txt'), 0o600);
    symlinkSync('keep.txt', join(pair.source, 'alias'));
    await converged(pair);
    expect(readFileSync(join(pair.target, 'keep.txt'), 'utf8')).toBe('two');
    expect(statSync(join(pair.target, 'keep.txt')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(pair.target, 'dir/moved-here.txt'), 'utf8')).toBe('moving content');
    expect(existsSync(join(pair.target, 'moved.txt'))).toBe(false);
    expect(existsSync(join(pair.target, 'dir/sub'))).toBe(false);
    expect(readlinkSync(join(pair.target, 'alias'))).toBe('keep.txt');
    // a path that changes type: a file becomes a folder
    rmSync(join(pair.source, 'alias'));
    mkdirSync(join(pair.source, 'alias'));
    writeFileSync(join(pair.source, 'alias/inside.txt'), 'in');
    await converged(pair);
    expect(readFileSync(join(pair.target, 'alias/inside.txt'), 'utf8')).toBe('in');
  });

  it('leaves excluded paths alone on both sides (gitignore syntax)', async () => {
    const exclude = ['node_modules', '*.log', '!keep.log'];
    const pair = startPair(exclude, (source, target) => {
      mkdirSync(join(source, 'node_modules/dep'), { recursive: true });
      writeFileSync(join(source, 'node_modules/dep/index.js'), 'workspace copy');
      writeFileSync(join(source, 'debug.log'), 'noise');
      writeFileSync(join(source, 'keep.log'), 'kept');
      writeFileSync(join(source, 'app.js'), 'app');
      mkdirSync(join(target, 'node_modules/own'), { recursive: true });
      writeFileSync(join(target, 'node_modules/own/index.js'), 'the service\'s own install');
    });
    await converged(pair, exclude);
    expect(existsSync(join(pair.target, 'node_modules/dep'))).toBe(false);
    expect(readFileSync(join(pair.target, 'node_modules/own/index.js'), 'utf8')).toBe('the service\'s own install');
    expect(existsSync(join(pair.target, 'debug.log'))).toBe(false);
    expect(readFileSync(join(pair.target, 'keep.log'), 'utf8')).toBe('kept');
  });

  it('converges after a burst of 1,000 files like a branch switch', async () => {
    const pair = startPair();
    await converged(pair);
    for (let i = 0; i < 1000; i++) {
      const dir = join(pair.source, `pkg${i % 20}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, `file${i}.ts`), `export const n = ${i};\n`.repeat(1 + (i % 7)));
    }
    for (let i = 0; i < 1000; i += 3) rmSync(join(pair.source, `pkg${i % 20}`, `file${i}.ts`));
    for (let i = 1; i < 1000; i += 3) renameSync(join(pair.source, `pkg${i % 20}`, `file${i}.ts`), join(pair.source, `pkg${i % 20}`, `renamed${i}.ts`));
    const hash = await converged(pair);
    expect(hash).toBe(treeHash(new TreeScanner(pair.target, createExcludes([])).scan()));
  });

  it('compares a listing with its folder: names what differs in lines under the limit, removes what is not listed, fixes modes', () => {
    const base = mkdtempSync(join(tmpdir(), 'den-sync-'));
    dirs.push(base);
    const target = join(base, 'target');
    mkdirSync(join(target, 'lib'), { recursive: true });
    writeFileSync(join(target, 'same.txt'), 'same');
    writeFileSync(join(target, 'mode.txt'), 'mode', { mode: 0o644 });
    writeFileSync(join(target, 'changed.txt'), 'changed in the service');
    writeFileSync(join(target, 'lib/stray.txt'), 'not in the workspace');
    const statuses: SyncTargetStatus[] = [];
    const lines = new LineSplitter(1 << 20, (line) => statuses.push(syncTargetStatusSchema.parse(JSON.parse(line))));
    const frames: AgentFrame[] = [];
    const handler = openSyncTarget(4, { kind: 'sync-target', root: target, exclude: [] }, DEFAULT_CHANNEL_WINDOW, {
      send(frame) {
        frames.push(frame);
        if (frame.type === 'data') lines.push(frame.payload);
      },
      baseEnv: () => ({}),
      home: () => base,
    }, () => {});
    handlers.push(handler);
    const digest = (text: string) => createHash('sha256').update(text).digest('hex');
    // 3,000 missing files with long names: more than one status line's worth of paths
    const missing = Array.from({ length: 3000 }, (_, i) => `lib/missing-in-the-service-${String(i).padStart(5, '0')}.txt`);
    const records: SyncRecord[] = [
      { op: 'verify-begin' },
      { op: 'verify', path: 'changed.txt', type: 'f', mode: 0o644, digest: digest('as in the workspace') },
      { op: 'verify', path: 'lib', type: 'd', mode: 0o755, digest: '' },
      ...missing.map((path): SyncRecord => ({ op: 'verify', path, type: 'f', mode: 0o644, digest: digest(path) })),
      { op: 'verify', path: 'mode.txt', type: 'f', mode: 0o600, digest: digest('mode') },
      { op: 'verify', path: 'same.txt', type: 'f', mode: statSync(join(target, 'same.txt')).mode & 0o7777, digest: digest('same') },
      { op: 'verify-end' },
    ];
    chmodSync(join(target, 'lib'), 0o755);
    for (const record of records) handler.onData(encodeSyncRecord(record));
    expect(frames.find((frame) => frame.type === 'close')).toBeUndefined();
    const differs = statuses.filter((status) => status.type === 'differs');
    expect(differs.length).toBeGreaterThan(1);
    expect(differs.flatMap((status) => status.paths)).toEqual(['changed.txt', ...missing]);
    expect(statuses.at(-1)).toEqual({ type: 'differs-end', files: 3001, removed: 1 });
    expect(existsSync(join(target, 'lib/stray.txt'))).toBe(false);
    expect(statSync(join(target, 'mode.txt')).mode & 0o777).toBe(0o600);
    expect(readFileSync(join(target, 'changed.txt'), 'utf8')).toBe('changed in the service');
  });

  it('refuses a target folder it cannot make, with a sentence saying why', () => {
    // (a folder the service's user may not write is tested against docker, where the service is not root)
    const base = mkdtempSync(join(tmpdir(), 'den-sync-'));
    dirs.push(base);
    writeFileSync(join(base, 'a-file'), '');
    const frames: AgentFrame[] = [];
    openSyncTarget(3, { kind: 'sync-target', root: join(base, 'a-file/app'), exclude: [] }, DEFAULT_CHANNEL_WINDOW, {
      send: (frame) => frames.push(frame),
      baseEnv: () => ({}),
      home: () => base,
    }, () => {});
    expect(frames).toEqual([expect.objectContaining({ type: 'open_error', code: 'SYNC_TARGET_UNWRITABLE' })]);
    expect((frames[0] as { message: string }).message).toMatch(/a-file.* is a file, not a folder/);
  });
});
