import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Random secrets handed to clients (API tokens, session cookies, CSRF tokens) and the hashes we
 * store instead of them. A sha256 is enough here: the secrets carry 256 bits of randomness, so
 * there is nothing to brute-force, unlike passwords.
 */

export const API_TOKEN_PREFIX = 'den_';

/** `den_` + 32 random bytes, base64url: recognisable in a leak scan, unguessable. */
export function generateApiToken(): string {
  return API_TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

export function generateSessionId(): string {
  return randomBytes(32).toString('base64url');
}

export function generateCsrfToken(): string {
  return randomBytes(24).toString('base64url');
}

/** The stored form of a token or session id: sha256, hex. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** Compares two strings without leaking where they differ through timing. */
export function safeEqual(a: string, b: string): boolean {
  const left = createHash('sha256').update(a).digest();
  const right = createHash('sha256').update(b).digest();
  return timingSafeEqual(left, right) && a.length === b.length;
}
