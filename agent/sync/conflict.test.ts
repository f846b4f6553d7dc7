import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { conflictCopyName, decideIncoming, withoutRenames, type Signature } from './conflict.ts';
import { createExcludes } from './tree.ts';

const signature = fc.oneof(fc.constant(null), fc.constant('d'), fc.constantFrom('f:a', 'f:b', 'f:c', 'l:a', 'l:b'));
const change = fc.record({ base: signature, incoming: fc.option(signature, { nil: undefined }), local: signature, known: signature });

describe('the two-way conflict rule', () => {
  it('applies without a conflict whenever this side still has the base, or already has the incoming version', () => {
    fc.assert(fc.property(fc.constantFrom('local' as const, 'incoming' as const), change, (wins, c) => {
      const decision = decideIncoming(wins, c);
      const unchanged = c.local === c.base || (c.incoming !== undefined && c.local === c.incoming);
      expect(decision.conflict).toBe(!unchanged && (wins === 'local' || c.local !== c.known));
      if (unchanged) expect(decision).toEqual({ apply: true, conflict: false, saveLocal: false });
    }));
  });

  it('the workspace never lets an incoming change replace a version it changed; the service always takes the workspace\'s', () => {
    fc.assert(fc.property(change, (c) => {
      const unchanged = c.local === c.base || (c.incoming !== undefined && c.local === c.incoming);
      expect(decideIncoming('local', c).apply).toBe(unchanged);
      expect(decideIncoming('local', c).saveLocal).toBe(false);
      expect(decideIncoming('incoming', c).apply).toBe(true);
    }));
  });

  it('the service sends its replaced version back only when it is a file the workspace has not been sent', () => {
    fc.assert(fc.property(change, (c) => {
      const decision = decideIncoming('incoming', c);
      const unchanged = c.local === c.base || (c.incoming !== undefined && c.local === c.incoming);
      expect(decision.saveLocal).toBe(!unchanged && c.local !== c.known && (c.local as Signature)?.startsWith('f:') === true);
    }));
  });

  it('names conflict copies beside the file, by time, and never syncs them', () => {
    const copy = conflictCopyName('src/app.js', new Date('2026-12-07T04:30:12.345Z'));
    expect(copy).toBe('src/app.js.den-conflict-2026-12-07T04-30-12-345Z');
    expect(createExcludes([])(copy, false)).toBe(true);
    expect(createExcludes([])('src/app.js', false)).toBe(false);
  });

  it('says a rename as a delete and a write, deletes first', () => {
    const entry = { type: 'f' as const, mode: 0o644, size: 1, digest: 'x' };
    const ops = withoutRenames([{ op: 'rename', from: 'a', to: 'b' }, { op: 'delete', path: 'c' }, { op: 'send', path: 'd', entry }], new Map([['b', entry], ['d', entry]]));
    expect(ops).toEqual([{ op: 'delete', path: 'a' }, { op: 'delete', path: 'c' }, { op: 'send', path: 'd', entry }, { op: 'send', path: 'b', entry }]);
  });
});
