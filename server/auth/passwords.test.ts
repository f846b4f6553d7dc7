import { describe, expect, it } from 'vitest';
import { passwordSchema } from '../../protocol/users.ts';
import { hashPassword, verifyAgainstDummy, verifyPassword } from './passwords.ts';

// Cheap parameters keep the suite fast; the defaults are exercised once below.
const FAST = { N: 1024, r: 8, p: 1 };

describe('password hashing', () => {
  it('verifies the right password and refuses a wrong one', async () => {
    const hash = await hashPassword('correct horse battery', FAST);
    expect(await verifyPassword('correct horse battery', hash)).toBe(true);
    expect(await verifyPassword('correct horse batterY', hash)).toBe(false);
    expect(await verifyPassword('', hash)).toBe(false);
  });

  it('stores the scrypt parameters and a random salt in the hash string', async () => {
    const a = await hashPassword('same password', FAST);
    const b = await hashPassword('same password', FAST);
    expect(a).toMatch(/^scrypt\$1024\$8\$1\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{86}$/);
    expect(a).not.toBe(b);
    expect(a).not.toContain('same password');
  });

  it('hashes with the default cost (N=2^15) and verifies with the parameters read from the hash', async () => {
    const hash = await hashPassword('default cost password');
    expect(hash.startsWith('scrypt$32768$8$1$')).toBe(true);
    expect(await verifyPassword('default cost password', hash)).toBe(true);
  });

  it('treats equivalent Unicode spellings of a password as the same password', async () => {
    const hash = await hashPassword('caf\u00e9-password', FAST);
    expect(await verifyPassword('cafe\u0301-password', hash)).toBe(true);
  });

  it('refuses malformed or absurd hash strings instead of throwing', async () => {
    for (const stored of ['', 'plain', 'scrypt$1024$8$1$c2FsdA', 'bcrypt$1$2$3$4$5', 'scrypt$1000$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA', `scrypt$${2 ** 30}$8$1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA`]) {
      expect(await verifyPassword('whatever1', stored)).toBe(false);
    }
  });

  it('spends a verification on unknown users and always answers false', async () => {
    expect(await verifyAgainstDummy('anything')).toBe(false);
  });
});

describe('password policy', () => {
  it('refuses passwords shorter than 8 characters with a reason that says so', () => {
    const result = passwordSchema.safeParse('short');
    expect(result.success).toBe(false);
    expect(result.error?.issues[0].message).toBe('must be at least 8 characters long; choose a longer password');
    expect(passwordSchema.safeParse('12345678').success).toBe(true);
  });
});
