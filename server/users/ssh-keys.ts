import type { Kysely, Selectable } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { AddSshKeyRequest, SshKeyDto } from '../../protocol/users.ts';
import type { RevocationBus } from '../auth/revocations.ts';
import type { Database, SshKeysTable } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import { parseSshPublicKey } from './ssh-key-format.ts';
import { isUniqueViolation } from '../store/unique.ts';

/**
 * Each user's SSH public keys (the SSH gateway authenticates with them). A key belongs to one
 * user only: the fingerprint is unique across den, so a key always identifies one account.
 */

export async function listSshKeys(db: Kysely<Database>, userId: string): Promise<SshKeyDto[]> {
  const rows = await db.selectFrom('ssh_keys').selectAll().where('user_id', '=', userId).orderBy('created_at').orderBy('id').execute();
  return rows.map(toSshKeyDto);
}

export async function addSshKey(db: Kysely<Database>, clock: Clock, userId: string, request: AddSshKeyRequest): Promise<SshKeyDto> {
  const parsed = parseSshPublicKey(request.publicKey);
  const row: Selectable<SshKeysTable> = {
    id: crypto.randomUUID(),
    user_id: userId,
    name: request.name || parsed.comment.slice(0, 128) || parsed.type,
    public_key: parsed.publicKey,
    fingerprint: parsed.fingerprint,
    created_at: iso(clock.now()),
  };
  try {
    await db.insertInto('ssh_keys').values(row).execute();
  } catch (error) {
    if (isUniqueViolation(error)) {
      throw new AppError('SSH_KEY_EXISTS', `The SSH key ${parsed.fingerprint} is already registered. Each key may belong to one account only; generate a new key for this one.`);
    }
    throw error;
  }
  return toSshKeyDto(row);
}

/** Removes a key; the SSH connections it opened end (on every replica), as access ends when it is taken away (ADR 0009). */
export async function deleteSshKey(db: Kysely<Database>, revocations: RevocationBus, userId: string, keyId: string): Promise<void> {
  const result = await db.deleteFrom('ssh_keys').where('id', '=', keyId).where('user_id', '=', userId).executeTakeFirst();
  if (Number(result.numDeletedRows) === 0) {
    throw new AppError('SSH_KEY_NOT_FOUND', `You have no SSH key with id '${keyId}'. Run \`den keys list\` to see your keys.`);
  }
  revocations.publish({ kind: 'ssh-key', userId, keyId });
}

/** The active user a key fingerprint belongs to (for the SSH gateway); undefined when unknown or suspended. */
export async function findUserBySshFingerprint(
  db: Kysely<Database>,
  fingerprint: string,
): Promise<{ userId: string; username: string; role: string; keyId: string } | undefined> {
  return db
    .selectFrom('ssh_keys')
    .innerJoin('users', 'users.id', 'ssh_keys.user_id')
    .select(['users.id as userId', 'users.username', 'users.role', 'ssh_keys.id as keyId'])
    .where('ssh_keys.fingerprint', '=', fingerprint)
    .where('users.suspended', '=', 0)
    .executeTakeFirst();
}

function toSshKeyDto(row: Selectable<SshKeysTable>): SshKeyDto {
  return {
    id: row.id,
    name: row.name,
    type: row.public_key.split(' ')[0],
    publicKey: row.public_key,
    fingerprint: row.fingerprint,
    createdAt: row.created_at,
  };
}
