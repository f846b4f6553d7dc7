import { describe, expect, test } from 'vitest';
import { normaliseServerUrl, parseWorkspaceRef } from './refs.ts';
import { parseParams } from './params.ts';
import { UsageError } from './errors.ts';

describe('parseWorkspaceRef', () => {
  test('reads NAME as the caller\'s workspace and OWNER/NAME as that owner\'s', () => {
    expect(parseWorkspaceRef('demo')).toEqual({ name: 'demo' });
    expect(parseWorkspaceRef('alice/demo')).toEqual({ owner: 'alice', name: 'demo' });
  });

  test('refuses other shapes with a usage error that names the accepted forms', () => {
    for (const bad of ['', 'a/b/c', '/demo', 'alice/']) {
      expect(() => parseWorkspaceRef(bad)).toThrow(/Use NAME for your own workspace or OWNER\/NAME/);
    }
  });
});

describe('normaliseServerUrl', () => {
  test('adds http:// for loopback, https:// otherwise, and drops trailing slashes', () => {
    expect(normaliseServerUrl('127.0.0.1:7080')).toBe('http://127.0.0.1:7080');
    expect(normaliseServerUrl('localhost:7080/')).toBe('http://localhost:7080');
    expect(normaliseServerUrl('den.example.com')).toBe('https://den.example.com');
    expect(normaliseServerUrl('http://10.0.0.1:7080/')).toBe('http://10.0.0.1:7080');
  });

  test('refuses non-http schemes', () => {
    expect(() => normaliseServerUrl('ftp://den.example.com')).toThrow(UsageError);
  });
});

describe('parseParams', () => {
  test('splits at the first = so values may contain =', () => {
    expect(parseParams(['greeting=hi', 'expr=a=b', 'empty='], '--param')).toEqual({ greeting: 'hi', expr: 'a=b', empty: '' });
  });

  test('refuses a pair without a key or =', () => {
    expect(() => parseParams(['greeting'], '--param')).toThrow("--param 'greeting' is not KEY=VALUE");
    expect(() => parseParams(['=x'], '--param')).toThrow(UsageError);
  });
});
