import type { Kysely } from 'kysely';
import ssh2 from 'ssh2';
import type { Database } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import { isUniqueViolation } from '../store/unique.ts';
import { sshFingerprint } from '../users/ssh-key-format.ts';

export interface HostKey {
  /** OpenSSH private key text, for the ssh2 server */
  privateKey: string;
  /** `ssh-ed25519 AAAA...`, as a known_hosts line carries it */
  publicKey: string;
  /** `SHA256:...`, as ssh prints it on first connect */
  fingerprint: string;
}

const ALGORITHM = 'ssh-ed25519';

/**
 * The gateway's host key: generated once by whichever replica needs it first and kept in the
 * store, so every replica (and every restart) presents the same key and clients never see a
 * "host key changed" warning. Two replicas racing to create it both end up with the stored one.
 */
export async function loadHostKey(db: Kysely<Database>, clock: Clock): Promise<HostKey> {
  const existing = await readHostKey(db);
  if (existing) return existing;
  const generated = ssh2.utils.generateKeyPairSync('ed25519');
  try {
    await db
      .insertInto('ssh_host_keys')
      .values({ algorithm: ALGORITHM, private_key: generated.private, public_key: generated.public, created_at: iso(clock.now()) })
      .execute();
  } catch (error) {
    if (!isUniqueViolation(error)) throw error;
  }
  const stored = await readHostKey(db);
  if (!stored) throw new Error('the SSH host key vanished from the store right after it was written');
  return stored;
}

async function readHostKey(db: Kysely<Database>): Promise<HostKey | undefined> {
  const row = await db.selectFrom('ssh_host_keys').select(['private_key', 'public_key']).where('algorithm', '=', ALGORITHM).executeTakeFirst();
  if (!row) return undefined;
  const blob = Buffer.from(row.public_key.split(' ')[1] ?? '', 'base64');
  return { privateKey: row.private_key, publicKey: row.public_key, fingerprint: sshFingerprint(blob) };
}
