import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_CHANNEL_WINDOW, type AgentFrame } from '../../protocol/agent.ts';
import { LineSplitter, syncSourceStatusSchema, syncTargetStatusSchema, type SyncSourceOpen, type SyncSourceStatus, type SyncTargetOpen, type SyncTargetStatus } from '../../protocol/sync.ts';
import type { ChannelContext, ChannelHandler } from '../exec.ts';
import { openSyncSource } from './source.ts';
import { openSyncTarget } from './target.ts';
import { createExcludes, TreeScanner, treeHash } from './tree.ts';

/**
 * Two-way sync between two real folders with the four channels the server opens (workspace ->
 * service, then service -> workspace), joined as the server joins them, each direction with a
 * tap that can hold its op stream: holding both while each side edits the same file makes the
 * conflict deterministic.
 */
const CONVERGE_TIMEOUT_MS = 10_000;
/** Longer than the sources' batching delay (100 ms at most) several times over. */
const QUIET_CHECK_MS = 500;

interface Direction {
  sourceStatus: SyncSourceStatus[];
  targetStatus: SyncTargetStatus[];
  closed: AgentFrame[];
  /** while true, the op stream is queued instead of delivered */
  held: boolean;
  queue: Uint8Array[];
  release(): void;
  /** a command line for the source, as the server sends it (`resync`, `resend`) */
  command(line: object): void;
}

const dirs: string[] = [];
const handlers: ChannelHandler[] = [];
afterEach(() => {
  for (const handler of handlers.splice(0)) handler.abort();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

let pairs = 0;

function connect(sourceSpec: SyncSourceOpen, targetSpec: SyncTargetOpen, home: string): Direction {
  const direction: Direction = {
    sourceStatus: [], targetStatus: [], closed: [], held: false, queue: [],
    release() {
      direction.held = false;
      for (const payload of direction.queue.splice(0)) target.onData(payload);
    },
    command(line) {
      source.onData(Buffer.from(`${JSON.stringify(line)}\n`));
    },
  };
  const sourceLines = new LineSplitter(1 << 20, (line) => direction.sourceStatus.push(syncSourceStatusSchema.parse(JSON.parse(line))));
  const targetLines = new LineSplitter(1 << 20, (line) => direction.targetStatus.push(syncTargetStatusSchema.parse(JSON.parse(line))));
  const context = (send: ChannelContext['send']): ChannelContext => ({ send, baseEnv: () => ({}), home: () => home });
  // the target opens first, as the server opens it (the source's first batch needs somewhere to go)
  const target: ChannelHandler = openSyncTarget(2, targetSpec, DEFAULT_CHANNEL_WINDOW, context((frame) => {
    if (frame.type === 'data') {
      targetLines.push(frame.payload);
      queueMicrotask(() => target.onWindow(frame.payload.byteLength));
    } else if (frame.type === 'window') source.onWindow(frame.bytes);
    else if (frame.type === 'close' || frame.type === 'open_error') direction.closed.push(frame);
  }), () => {});
  const source: ChannelHandler = openSyncSource(1, sourceSpec, DEFAULT_CHANNEL_WINDOW, context((frame) => {
    if (frame.type === 'data') {
      const payload = Buffer.from(frame.payload);
      if (direction.held) direction.queue.push(payload);
      else queueMicrotask(() => target.onData(payload));
    } else if (frame.type === 'stderr') {
      sourceLines.push(frame.payload);
      queueMicrotask(() => source.onWindow(frame.payload.byteLength));
    } else if (frame.type === 'close' || frame.type === 'open_error') direction.closed.push(frame);
  }), () => {});
  handlers.push(source, target);
  return direction;
}

interface TwoWay {
  workspace: string;
  service: string;
  forward: Direction;
  reverse: Direction;
}

/** The workspace's folder mirrored into the service's, then the way back opened once they are the same (as the server does). */
async function startTwoWay(prepare: (workspace: string) => void): Promise<TwoWay> {
  const base = mkdtempSync(join(tmpdir(), 'den-two-way-'));
  dirs.push(base);
  const workspace = join(base, 'workspace');
  const service = join(base, 'service');
  mkdirSync(workspace);
  prepare(workspace);
  // one pair key per agent: the workspace's agent and the service's agent are separate processes in den
  const atWorkspace = `w${++pairs}`;
  const atService = `s${pairs}`;
  const forward = connect({ kind: 'sync-source', root: workspace, exclude: [], twoWay: { pair: atWorkspace, initial: 'full' } },
    { kind: 'sync-target', root: service, exclude: [], twoWay: { pair: atService, wins: 'incoming' } }, base);
  await until(() => forward.targetStatus.some((s) => s.type === 'applied'));
  const reverse = connect({ kind: 'sync-source', root: service, exclude: [], twoWay: { pair: atService, initial: 'known' } },
    { kind: 'sync-target', root: workspace, exclude: [], twoWay: { pair: atWorkspace, wins: 'local' } }, base);
  return { workspace, service, forward, reverse };
}

async function until(condition: () => boolean, what = 'the condition'): Promise<void> {
  const deadline = Date.now() + CONVERGE_TIMEOUT_MS;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${CONVERGE_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const hashOf = (dir: string) => treeHash(new TreeScanner(dir, createExcludes([])).scan());

/** Both folders hash the same, then no batch goes either way: nothing echoes. */
async function converged(sync: TwoWay): Promise<void> {
  await until(() => hashOf(sync.workspace) === hashOf(sync.service), 'equal hashes on both sides');
  const batches = () => [...sync.forward.sourceStatus, ...sync.reverse.sourceStatus].filter((s) => s.type === 'batch').length;
  // the empty batches each side sends after seeing what the other applied die out at once...
  let seen = -1;
  for (const deadline = Date.now() + CONVERGE_TIMEOUT_MS; seen !== batches() && Date.now() < deadline;) {
    seen = batches();
    await new Promise((resolve) => setTimeout(resolve, QUIET_CHECK_MS / 2));
  }
  // ...and nothing loops
  await new Promise((resolve) => setTimeout(resolve, QUIET_CHECK_MS));
  expect(batches()).toBe(seen);
  expect(hashOf(sync.workspace)).toBe(hashOf(sync.service));
}

/** Holds both op streams, makes the edits, and waits until each side has sent its change (still held). */
async function whileHeld(sync: TwoWay, edit: () => void): Promise<void> {
  sync.forward.held = true;
  sync.reverse.held = true;
  const sent = (d: Direction) => d.sourceStatus.filter((s) => s.type === 'batch').length;
  const [forwardBefore, reverseBefore] = [sent(sync.forward), sent(sync.reverse)];
  edit();
  await until(() => sent(sync.forward) > forwardBefore && sent(sync.reverse) > reverseBefore, 'both sides sent their change');
}

/** What the server does when the hashes disagree: asks for a listing and hands the differing paths back as `resend`; returns them. */
async function resyncByListing(d: Direction): Promise<string[]> {
  const from = d.targetStatus.length;
  d.command({ type: 'resync' });
  await until(() => d.targetStatus.slice(from).some((s) => s.type === 'differs-end'), 'the listing compared');
  const paths = d.targetStatus.slice(from).flatMap((s) => (s.type === 'differs' ? s.paths : []));
  if (paths.length > 0) d.command({ type: 'resend', paths });
  return paths;
}

const conflicts = (d: Direction) => d.targetStatus.filter((s) => s.type === 'conflict');
const copiesIn = (dir: string, name: string) => readdirSync(dir).filter((file) => file.startsWith(`${name}.den-conflict-`));

describe('two-way sync between two folders', () => {
  it('brings creates, edits, deletes and renames made in the service back into the workspace, without sending them back', async () => {
    const sync = await startTwoWay((workspace) => {
      writeFileSync(join(workspace, 'a.txt'), 'a');
      writeFileSync(join(workspace, 'gone.txt'), 'gone');
      writeFileSync(join(workspace, 'move.txt'), 'move me');
    });
    await converged(sync);
    const forwardBatches = sync.forward.targetStatus.filter((s) => s.type === 'applied').length;
    mkdirSync(join(sync.service, 'made/deep'), { recursive: true });
    writeFileSync(join(sync.service, 'made/deep/new.txt'), 'created in the service');
    writeFileSync(join(sync.service, 'a.txt'), 'edited in the service');
    rmSync(join(sync.service, 'gone.txt'));
    renameSync(join(sync.service, 'move.txt'), join(sync.service, 'made/moved.txt'));
    await until(() => existsSync(join(sync.workspace, 'made/moved.txt')) && !existsSync(join(sync.workspace, 'gone.txt')));
    await converged(sync);
    expect(readFileSync(join(sync.workspace, 'made/deep/new.txt'), 'utf8')).toBe('created in the service');
    expect(readFileSync(join(sync.workspace, 'a.txt'), 'utf8')).toBe('edited in the service');
    expect(readFileSync(join(sync.workspace, 'made/moved.txt'), 'utf8')).toBe('move me');
    expect(existsSync(join(sync.workspace, 'move.txt'))).toBe(false);
    // nothing went back: the forward direction applied only empty batches since
    const since = sync.forward.targetStatus.filter((s) => s.type === 'applied').slice(forwardBatches);
    expect(since.every((s) => s.type === 'applied' && s.files === 0)).toBe(true);
    expect([...conflicts(sync.forward), ...conflicts(sync.reverse)]).toEqual([]);
    // and the workspace's own edits still flow
    writeFileSync(join(sync.workspace, 'a.txt'), 'edited in the workspace');
    await until(() => readFileSync(join(sync.service, 'a.txt'), 'utf8') === 'edited in the workspace');
    await converged(sync);
  });

  it('a file changed on both sides with both changes on their way: the workspace keeps its version and the service\'s is written beside it', async () => {
    const sync = await startTwoWay((workspace) => writeFileSync(join(workspace, 'both.txt'), 'base'));
    await converged(sync);
    await whileHeld(sync, () => {
      writeFileSync(join(sync.workspace, 'both.txt'), 'the workspace\'s edit');
      writeFileSync(join(sync.service, 'both.txt'), 'the service\'s edit');
    });
    sync.forward.release();
    sync.reverse.release();
    await until(() => copiesIn(sync.workspace, 'both.txt').length === 1, 'a conflict copy in the workspace');
    await converged(sync);
    expect(readFileSync(join(sync.workspace, 'both.txt'), 'utf8')).toBe('the workspace\'s edit');
    expect(readFileSync(join(sync.service, 'both.txt'), 'utf8')).toBe('the workspace\'s edit');
    const [copy] = copiesIn(sync.workspace, 'both.txt');
    expect(readFileSync(join(sync.workspace, copy), 'utf8')).toBe('the service\'s edit');
    // the copy stays in the workspace: never synced
    expect(copiesIn(sync.service, 'both.txt')).toEqual([]);
    expect(conflicts(sync.reverse)).toEqual([{ type: 'conflict', path: 'both.txt', copy, kept: 'local' }]);
    expect(conflicts(sync.forward)).toEqual([]);
  });

  it('a service edit not yet sent when the workspace\'s change lands there goes back as a conflict copy', async () => {
    const sync = await startTwoWay((workspace) => writeFileSync(join(workspace, 'late.txt'), 'base'));
    await converged(sync);
    sync.forward.held = true;
    const sent = sync.forward.sourceStatus.filter((s) => s.type === 'batch').length;
    writeFileSync(join(sync.workspace, 'late.txt'), 'the workspace\'s edit');
    await until(() => sync.forward.sourceStatus.filter((s) => s.type === 'batch').length > sent, 'the workspace sent its change');
    // in one turn: the service's agent has not seen its own edit when the workspace's arrives
    writeFileSync(join(sync.service, 'late.txt'), 'the service\'s unsent edit');
    sync.forward.release();
    await until(() => copiesIn(sync.workspace, 'late.txt').length === 1, 'a conflict copy in the workspace');
    await converged(sync);
    expect(readFileSync(join(sync.service, 'late.txt'), 'utf8')).toBe('the workspace\'s edit');
    expect(readFileSync(join(sync.workspace, 'late.txt'), 'utf8')).toBe('the workspace\'s edit');
    expect(readFileSync(join(sync.workspace, copiesIn(sync.workspace, 'late.txt')[0]), 'utf8')).toBe('the service\'s unsent edit');
    expect(conflicts(sync.reverse)).toHaveLength(1);
    expect(readdirSync(sync.service).filter((name) => name.startsWith('.den-sync-tmp-'))).toEqual([]);
  });

  it('a folder the service deleted while the workspace changed a file in it stays in the workspace and goes back to the service', async () => {
    const sync = await startTwoWay((workspace) => {
      mkdirSync(join(workspace, 'lib'));
      writeFileSync(join(workspace, 'lib/x.js'), 'x');
    });
    await converged(sync);
    await whileHeld(sync, () => {
      writeFileSync(join(sync.workspace, 'lib/x.js'), 'x, edited');
      rmSync(join(sync.service, 'lib'), { recursive: true });
    });
    sync.reverse.release();
    sync.forward.release();
    await until(() => existsSync(join(sync.service, 'lib/x.js')), 'the folder back in the service');
    await converged(sync);
    expect(readFileSync(join(sync.workspace, 'lib/x.js'), 'utf8')).toBe('x, edited');
    expect(readFileSync(join(sync.service, 'lib/x.js'), 'utf8')).toBe('x, edited');
    expect([...conflicts(sync.reverse), ...conflicts(sync.forward)]).toHaveLength(1);
  });

  it('a listing resync (protocol 1.6) in two-way mode resends only what differs and loses no edit of the service\'s', async () => {
    const sync = await startTwoWay((workspace) => {
      writeFileSync(join(workspace, 'same.txt'), 'same');
      writeFileSync(join(workspace, 'edited.txt'), 'base');
    });
    await converged(sync);
    // in sync: the listing finds nothing, removes nothing, and starts no conflict
    expect(await resyncByListing(sync.forward)).toEqual([]);
    expect(sync.forward.targetStatus.findLast((s) => s.type === 'differs-end')).toEqual({ type: 'differs-end', files: 0, removed: 0 });
    await converged(sync);
    // the service's edit is on its way back while the server finds the hashes disagree: only that file differs
    sync.reverse.held = true;
    const reverseBefore = sync.reverse.sourceStatus.filter((s) => s.type === 'batch').length;
    writeFileSync(join(sync.service, 'edited.txt'), 'the service\'s edit');
    await until(() => sync.reverse.sourceStatus.filter((s) => s.type === 'batch').length > reverseBefore, 'the service sent its edit');
    expect(await resyncByListing(sync.forward)).toEqual(['edited.txt']);
    await until(() => readFileSync(join(sync.service, 'edited.txt'), 'utf8') === 'base', 'the workspace\'s version resent');
    sync.reverse.release();
    await until(() => readFileSync(join(sync.workspace, 'edited.txt'), 'utf8') === 'the service\'s edit', 'the service\'s edit arrived');
    // the next comparison (the server's, after 3 s of disagreement) sends the edit the workspace now has
    expect(await resyncByListing(sync.forward)).toEqual(['edited.txt']);
    await converged(sync);
    expect(readFileSync(join(sync.service, 'edited.txt'), 'utf8')).toBe('the service\'s edit');
    expect(readFileSync(join(sync.workspace, 'same.txt'), 'utf8')).toBe('same');
    expect([...conflicts(sync.forward), ...conflicts(sync.reverse)]).toEqual([]);
  });
});
