import type { Kysely, Selectable } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { ApiTokenDto, CreatedTokenDto, CreateTokenRequest } from '../../protocol/users.ts';
import type { ApiTokensTable, Database } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import type { RevocationBus } from './revocations.ts';
import { generateApiToken, hashSecret } from './secrets.ts';

/**
 * API tokens for the CLI and scripts: random, shown once, stored as sha256, revocable, with an
 * optional expiry. Revoked tokens keep their row (revoked_at) so the audit trail stays.
 */

export async function createApiToken(
  db: Kysely<Database>,
  clock: Clock,
  userId: string,
  request: CreateTokenRequest,
): Promise<CreatedTokenDto> {
  const token = generateApiToken();
  const now = clock.now();
  const row: Selectable<ApiTokensTable> = {
    id: crypto.randomUUID(),
    user_id: userId,
    name: request.name,
    token_hash: hashSecret(token),
    created_at: iso(now),
    expires_at: request.expiresInDays ? iso(new Date(now.getTime() + request.expiresInDays * 86_400_000)) : null,
    last_used_at: null,
    revoked_at: null,
  };
  await db.insertInto('api_tokens').values(row).execute();
  return { ...toApiTokenDto(row), token };
}

/** The user's tokens that are not revoked (expired ones are listed, with their expiry). */
export async function listApiTokens(db: Kysely<Database>, userId: string): Promise<ApiTokenDto[]> {
  const rows = await db
    .selectFrom('api_tokens')
    .selectAll()
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  return rows.map(toApiTokenDto);
}

/** Revokes one of the user's tokens and announces it, which ends what the token holds open. */
export async function revokeApiToken(
  db: Kysely<Database>,
  clock: Clock,
  revocations: RevocationBus,
  userId: string,
  tokenId: string,
): Promise<void> {
  const result = await db
    .updateTable('api_tokens')
    .set({ revoked_at: iso(clock.now()) })
    .where('id', '=', tokenId)
    .where('user_id', '=', userId)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  if (Number(result.numUpdatedRows) === 0) {
    throw new AppError('TOKEN_NOT_FOUND', `You have no API token with id '${tokenId}'. Run \`den tokens list\` to see your tokens.`);
  }
  revocations.publish({ kind: 'token', userId, tokenId });
}

// last_used_at is written at most once per this interval, so authenticated reads do not each
// cost a database write.
const LAST_USED_RESOLUTION_MS = 60_000;

/** Records a use of the token, coarsely. Returns the last_used_at the store holds afterwards. */
export async function touchApiToken(
  db: Kysely<Database>,
  clock: Clock,
  token: { id: string; last_used_at: string | null },
): Promise<string | null> {
  const now = clock.now();
  if (!apiTokenUseIsDue(token.last_used_at, now)) return token.last_used_at;
  const at = iso(now);
  await db.updateTable('api_tokens').set({ last_used_at: at }).where('id', '=', token.id).execute();
  return at;
}

/** Whether a use at `now` should be written, given the last recorded one. */
export function apiTokenUseIsDue(lastUsedAt: string | null, now: Date): boolean {
  return !lastUsedAt || now.getTime() - Date.parse(lastUsedAt) >= LAST_USED_RESOLUTION_MS;
}

export function toApiTokenDto(row: Selectable<ApiTokensTable>): ApiTokenDto {
  return {
    id: row.id,
    name: row.name,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    lastUsedAt: row.last_used_at,
  };
}
