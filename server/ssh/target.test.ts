import { describe, expect, it } from 'vitest';
import { parseSshLogin } from './target.ts';

describe('SSH login names', () => {
  it('reads WS, OWNER/WS and WS.OWNER', () => {
    expect(parseSshLogin('dev', 'alice')).toEqual({ owner: 'alice', name: 'dev' });
    expect(parseSshLogin('bob/dev', 'alice')).toEqual({ owner: 'bob', name: 'dev' });
    expect(parseSshLogin('dev.bob', 'alice')).toEqual({ owner: 'bob', name: 'dev' });
  });

  it('refuses anything else', () => {
    for (const bad of ['', 'a/b/c', 'a.b.c', '../x', 'dev/', '/dev', 'x'.repeat(64), 'dev bob']) expect(parseSshLogin(bad, 'alice')).toBeUndefined();
  });
});
