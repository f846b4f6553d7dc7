import { describe, expect, it } from 'vitest';
import { createLogSequences } from './log-sequences.ts';

describe('log sequences', () => {
  it('appends a seq once per workspace and agent process, and each workspace has its own', () => {
    const seqs = createLogSequences();
    expect(seqs.advance('w1', 'a', 1)).toBe(true);
    expect(seqs.advance('w1', 'a', 1)).toBe(false);
    expect(seqs.advance('w1', 'a', 2)).toBe(true);
    // the same instance id in another workspace is another agent
    expect(seqs.advance('w2', 'a', 1)).toBe(true);
  });

  it('keeps the newest instances of a workspace and the most recently active workspaces only', () => {
    const seqs = createLogSequences({ instances: 3, workspaces: 5 });
    for (let i = 0; i < 100; i++) seqs.advance('w', `instance-${i}`, 1);
    expect(seqs.size()).toBe(3);
    // the newest instance is remembered, the oldest forgotten
    expect(seqs.advance('w', 'instance-99', 1)).toBe(false);
    expect(seqs.advance('w', 'instance-0', 1)).toBe(true);
    for (let i = 0; i < 100; i++) seqs.advance(`w${i}`, 'a', 1);
    expect(seqs.size()).toBe(5);
    seqs.forget('w99');
    expect(seqs.size()).toBe(4);
  });
});
