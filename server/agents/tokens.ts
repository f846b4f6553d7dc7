import { createHash, randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { agentManifestSchema, type AgentManifest, type AgentManifestInput } from '../../protocol/agent.ts';
import type { Database } from '../store/schema.ts';
import { iso } from '../store/time.ts';

/** Recognisable prefix, so secret scanners and log redaction can spot leaked agent tokens. */
const TOKEN_PREFIX = 'denagent_';

export interface AgentIdentity {
  workspaceId: string;
  workspaceName: string;
  ownerName: string;
  buildId: string;
  manifest: AgentManifest;
}

/**
 * Issues the agent token of one build: random, returned once in plaintext, stored as sha256 with
 * the manifest the agent receives on connect. Earlier tokens of the workspace are revoked (an
 * agent of an older build cannot come back), and the workspace's agent_state is cleared until
 * the new agent reports. Pass a transaction handle to make it part of a larger write.
 */
export async function issueAgentToken(
  db: Kysely<Database>,
  input: { workspaceId: string; buildId: string; manifest: AgentManifestInput; now: Date },
): Promise<string> {
  const manifest = agentManifestSchema.parse(input.manifest);
  const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
  const now = iso(input.now);
  await revokeAgentTokens(db, input.workspaceId, input.now);
  await db
    .insertInto('agent_tokens')
    .values({
      token_hash: hashAgentToken(token),
      workspace_id: input.workspaceId,
      build_id: input.buildId,
      manifest_json: JSON.stringify(manifest),
      created_at: now,
      revoked_at: null,
    })
    .execute();
  await db.updateTable('workspaces').set({ agent_state: null }).where('id', '=', input.workspaceId).execute();
  return token;
}

/** Revokes every live agent token of a workspace (stop and delete builds call this too). */
export async function revokeAgentTokens(db: Kysely<Database>, workspaceId: string, now: Date): Promise<void> {
  await db
    .updateTable('agent_tokens')
    .set({ revoked_at: iso(now) })
    .where('workspace_id', '=', workspaceId)
    .where('revoked_at', 'is', null)
    .execute();
}

/** The workspace and build a token opens, or undefined when it is unknown, revoked or its workspace is deleted. */
export async function authenticateAgent(db: Kysely<Database>, token: string): Promise<AgentIdentity | undefined> {
  if (!token.startsWith(TOKEN_PREFIX) || token.length > 128) return undefined;
  const row = await db
    .selectFrom('agent_tokens')
    .innerJoin('workspaces', 'workspaces.id', 'agent_tokens.workspace_id')
    .innerJoin('users', 'users.id', 'workspaces.owner_id')
    .select([
      'agent_tokens.workspace_id',
      'agent_tokens.build_id',
      'agent_tokens.manifest_json',
      'workspaces.name as workspace_name',
      'users.username as owner_name',
    ])
    .where('agent_tokens.token_hash', '=', hashAgentToken(token))
    .where('agent_tokens.revoked_at', 'is', null)
    .where('workspaces.deleted_at', 'is', null)
    .executeTakeFirst();
  if (!row) return undefined;
  const manifest = agentManifestSchema.safeParse(JSON.parse(row.manifest_json));
  return {
    workspaceId: row.workspace_id,
    workspaceName: row.workspace_name,
    ownerName: row.owner_name,
    buildId: row.build_id,
    manifest: manifest.success ? manifest.data : agentManifestSchema.parse({}),
  };
}

/** The build whose token is live for a workspace (the build an agent that connects now belongs to). */
export async function currentAgentBuild(db: Kysely<Database>, workspaceId: string): Promise<string | undefined> {
  const row = await db
    .selectFrom('agent_tokens')
    .select('build_id')
    .where('workspace_id', '=', workspaceId)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return row?.build_id;
}

export function hashAgentToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}
