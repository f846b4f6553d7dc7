import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { API_TOKEN_PREFIX, generateApiToken, generateCsrfToken, generateSessionId, hashSecret, safeEqual } from './secrets.ts';

describe('API tokens and session secrets', () => {
  it('generates den_-prefixed tokens with 32 random bytes, different every time', () => {
    const a = generateApiToken();
    const b = generateApiToken();
    expect(a.startsWith(API_TOKEN_PREFIX)).toBe(true);
    expect(Buffer.from(a.slice(API_TOKEN_PREFIX.length), 'base64url')).toHaveLength(32);
    expect(a).not.toBe(b);
    expect(generateSessionId()).not.toBe(generateSessionId());
    expect(generateCsrfToken()).toMatch(/^[A-Za-z0-9_-]{32}$/);
  });

  it('stores the sha256 of a secret in hex, never the secret itself', () => {
    const token = generateApiToken();
    const stored = hashSecret(token);
    expect(stored).toBe(createHash('sha256').update(token).digest('hex'));
    expect(stored).toMatch(/^[0-9a-f]{64}$/);
    expect(stored).not.toContain(token.slice(4, 20));
  });

  it('compares secrets for equality, including different lengths', () => {
    expect(safeEqual('abc', 'abc')).toBe(true);
    expect(safeEqual('abc', 'abd')).toBe(false);
    expect(safeEqual('abc', 'abcd')).toBe(false);
    expect(safeEqual('', '')).toBe(true);
  });
});
