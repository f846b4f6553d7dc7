import { describe, expect, it } from 'vitest';
import { encodeSyncRecord, isSafeRelativePath, SyncStreamDecoder, type SyncStreamEvent } from '../../protocol/sync.ts';
import { planBatch } from './batch.ts';
import { createExcludes, treeHash, type TreeEntry } from './tree.ts';

const file = (digest: string, mode = 0o644): TreeEntry => ({ type: 'f', mode, size: 1, digest });
const dir = (mode = 0o755): TreeEntry => ({ type: 'd', mode, size: 0, digest: '' });

describe('planBatch', () => {
  it('moves a file whose content reappears elsewhere before deleting the folder it left', () => {
    const sent = new Map([['old', dir()], ['old/a.txt', file('A')], ['old/b.txt', file('B')]]);
    const now = new Map([['new', dir()], ['new/a.txt', file('A')]]);
    expect(planBatch(sent, ['old', 'new'], now).ops).toEqual([
      { op: 'rename', from: 'old/a.txt', to: 'new/a.txt' },
      { op: 'delete', path: 'old' },
      { op: 'send', path: 'new', entry: dir() },
    ]);
  });

  it('deletes only the topmost path of a removed subtree', () => {
    const sent = new Map([['a', dir()], ['a/b', dir()], ['a/b/c.txt', file('C')]]);
    expect(planBatch(sent, ['a', 'a/b', 'a/b/c.txt'], new Map()).ops).toEqual([{ op: 'delete', path: 'a' }]);
  });

  it('makes a folder before what it holds, and sends a changed mode as a chmod', () => {
    const sent = new Map([['run.sh', file('R', 0o644)]]);
    const now = new Map([['run.sh', file('R', 0o755)], ['z', dir()], ['z/y.txt', file('Y')]]);
    expect(planBatch(sent, ['z/y.txt', 'run.sh', 'z'], now).ops.map((op) => `${op.op} ${'path' in op ? op.path : ''}`)).toEqual(['chmod run.sh', 'send z', 'send z/y.txt']);
  });

  it('deletes a path whose type changed before creating it again', () => {
    const sent = new Map([['x', { type: 'l', mode: 0, size: 0, digest: 'L' } as TreeEntry]]);
    const now = new Map([['x', dir()], ['x/in.txt', file('I')]]);
    expect(planBatch(sent, ['x'], now).ops.map((op) => `${op.op} ${'path' in op ? op.path : ''}`)).toEqual(['delete x', 'send x', 'send x/in.txt']);
  });

  it('sends nothing for a path that did not change (an event without a change)', () => {
    const sent = new Map([['a.txt', file('A')]]);
    expect(planBatch(sent, ['a.txt'], new Map([['a.txt', file('A')]])).ops).toEqual([]);
  });
});

describe('treeHash', () => {
  it('depends on paths, modes and content, not on the order entries were found in', () => {
    const one = new Map([['b', file('B')], ['a', file('A')]]);
    const two = new Map([['a', file('A')], ['b', file('B')]]);
    expect(treeHash(one)).toBe(treeHash(two));
    expect(treeHash(new Map([['a', file('A', 0o600)], ['b', file('B')]]))).not.toBe(treeHash(two));
    expect(treeHash(new Map([['a', file('X')], ['b', file('B')]]))).not.toBe(treeHash(two));
    expect(treeHash(new Map([['c', file('A')], ['b', file('B')]]))).not.toBe(treeHash(two));
  });
});

describe('excludes', () => {
  it('follow gitignore syntax: folders, globs, negation, anchored paths', () => {
    const excluded = createExcludes(['node_modules', '*.log', '!keep.log', '/dist', 'cache/']);
    expect(excluded('node_modules', true)).toBe(true);
    expect(excluded('pkg/node_modules/x.js', false)).toBe(true);
    expect(excluded('debug.log', false)).toBe(true);
    expect(excluded('keep.log', false)).toBe(false);
    expect(excluded('dist', true)).toBe(true);
    expect(excluded('src/dist', true)).toBe(false);
    expect(excluded('cache', true)).toBe(true);
    expect(excluded('cache', false)).toBe(false);
    expect(excluded('src/app.ts', false)).toBe(false);
    // the target's temporary files are never synced
    expect(excluded('src/.den-sync-tmp-0a1b', false)).toBe(true);
  });
});

describe('the op stream', () => {
  it('decodes records and streams write bodies across arbitrary chunk boundaries', () => {
    const body = Buffer.from('hello, world');
    const stream = Buffer.concat([
      encodeSyncRecord({ op: 'mkdir', path: 'src', mode: 0o755 }),
      encodeSyncRecord({ op: 'write', path: 'src/a.txt', mode: 0o644, size: body.byteLength }), body,
      encodeSyncRecord({ op: 'write', path: 'empty', mode: 0o644, size: 0 }),
      encodeSyncRecord({ op: 'batch', batch: 1, files: 3, hash: 'h', detectedAt: 5 }),
    ]);
    for (const step of [1, 3, 7, stream.byteLength]) {
      const events: SyncStreamEvent[] = [];
      const decoder = new SyncStreamDecoder((event) => events.push(event.type === 'body' ? { type: 'body', bytes: Buffer.from(event.bytes) } : event));
      for (let offset = 0; offset < stream.byteLength; offset += step) decoder.push(stream.subarray(offset, offset + step));
      expect(decoder.idle).toBe(true);
      const records = events.filter((e) => e.type === 'record').map((e) => (e as { record: { op: string } }).record.op);
      expect(records).toEqual(['mkdir', 'write', 'write', 'batch']);
      expect(Buffer.concat(events.filter((e) => e.type === 'body').map((e) => (e as { bytes: Uint8Array }).bytes)).toString()).toBe('hello, world');
      expect(events.filter((e) => e.type === 'body-end')).toHaveLength(2);
    }
  });

  it('refuses a path that leaves the synced folder and an oversized header', () => {
    for (const path of ['../etc/passwd', '/etc/passwd', 'a/../../b', 'a//b', 'a/./b', '']) expect(isSafeRelativePath(path)).toBe(false);
    const escape = Buffer.from(JSON.stringify({ op: 'delete', path: '../x' }));
    const header = Buffer.alloc(4);
    header.writeUInt32BE(escape.byteLength);
    expect(() => new SyncStreamDecoder(() => {}).push(Buffer.concat([header, escape]))).toThrow(/malformed/);
    const huge = Buffer.alloc(4);
    huge.writeUInt32BE(10 * 1024 * 1024);
    expect(() => new SyncStreamDecoder(() => {}).push(huge)).toThrow(/outside/);
  });
});
