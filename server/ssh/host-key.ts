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

/** Generations of an ed25519 pair tried before giving up; one fails in 256 (below), so 16 never all do. */
const GENERATE_ATTEMPTS = 16;

/**
 * The gateway's host key: generated once by whichever replica needs it first and kept in the
 * store, so every replica (and every restart) presents the same key and clients never see a
 * "host key changed" warning. Two replicas racing to create it both end up with the stored one.
 * A stored key ssh2 cannot parse (written by an earlier den, below) was never served: it is
 * replaced, since no client can have seen it.
 */
export async function loadHostKey(db: Kysely<Database>, clock: Clock): Promise<HostKey> {
  const existing = await readHostKey(db);
  if (existing && usable(existing.privateKey, existing.publicKey)) return existing;
  if (existing) await db.deleteFrom('ssh_host_keys').where('algorithm', '=', ALGORITHM).where('private_key', '=', existing.privateKey).execute();
  const generated = generateHostKey();
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

/**
 * An ed25519 pair ssh2 can read back. ssh2 1.17's generateKeyPairSync strips every leading zero
 * byte of the public key, so about one pair in 256 (a public key starting with 0x00) comes out in a
 * form its own parseKey refuses ("Malformed OpenSSH private key"; mscdex/ssh2#1390, #1513): such a
 * pair is thrown away and another generated.
 */
export function generateHostKey(generate: () => { private: string; public: string } = () => ssh2.utils.generateKeyPairSync('ed25519')): { private: string; public: string } {
  for (let attempt = 0; attempt < GENERATE_ATTEMPTS; attempt++) {
    const pair = generate();
    if (usable(pair.private, pair.public)) return pair;
  }
  throw new Error(`ssh2 generated ${GENERATE_ATTEMPTS} ed25519 host keys in a row that it cannot parse; the SSH gateway cannot start.`);
}

function usable(privateKey: string, publicKey: string): boolean {
  return !(ssh2.utils.parseKey(privateKey) instanceof Error) && !(ssh2.utils.parseKey(publicKey) instanceof Error);
}

async function readHostKey(db: Kysely<Database>): Promise<HostKey | undefined> {
  const row = await db.selectFrom('ssh_host_keys').select(['private_key', 'public_key']).where('algorithm', '=', ALGORITHM).executeTakeFirst();
  if (!row) return undefined;
  const blob = Buffer.from(row.public_key.split(' ')[1] ?? '', 'base64');
  return { privateKey: row.private_key, publicKey: row.public_key, fingerprint: sshFingerprint(blob) };
}
