import { createHash, randomBytes } from 'node:crypto';
import type { Kysely } from 'kysely';
import { agentManifestSchema, MAIN_AGENT, type AgentManifest, type AgentManifestInput } from '../../protocol/agent.ts';
import type { Database } from '../store/schema.ts';
import { iso } from '../store/time.ts';
import { agentRef, type AgentTarget } from './hub-types.ts';

/** Recognisable prefix, so secret scanners and log redaction can spot leaked agent tokens. */
const TOKEN_PREFIX = 'denagent_';

export interface AgentIdentity {
  workspaceId: string;
  /** which of the workspace's agents: 'main' or an environment service's name */
  agentName: string;
  workspaceName: string;
  ownerName: string;
  buildId: string;
  manifest: AgentManifest;
}

/**
 * Issues the token of one agent (the workspace's main agent unless `agent` names a service's)
 * for one build: random, returned once in plaintext, stored as sha256 with the manifest the
 * agent receives on connect. Earlier tokens of that agent are revoked (an agent of an older
 * build cannot come back), and its state is cleared until the new agent reports. Pass a
 * transaction handle to make it part of a larger write.
 */
export async function issueAgentToken(
  db: Kysely<Database>,
  input: { workspaceId: string; agent?: string; buildId: string; manifest: AgentManifestInput; revision?: string; now: Date },
): Promise<string> {
  const manifest = agentManifestSchema.parse(input.manifest);
  const agent = input.agent ?? MAIN_AGENT;
  const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
  const now = iso(input.now);
  await db
    .updateTable('agent_tokens')
    .set({ revoked_at: now })
    .where('workspace_id', '=', input.workspaceId)
    .where('agent_name', '=', agent)
    .where('revoked_at', 'is', null)
    .execute();
  await db
    .insertInto('agent_tokens')
    .values({
      token_hash: hashAgentToken(token),
      workspace_id: input.workspaceId,
      agent_name: agent,
      build_id: input.buildId,
      manifest_json: JSON.stringify(manifest),
      created_at: now,
      revoked_at: null,
    })
    .execute();
  const revision = input.revision ?? null;
  await db
    .insertInto('agents')
    .values({ workspace_id: input.workspaceId, name: agent, state: null, revision, connected_at: null, disconnected_at: null })
    .onConflict((c) => c.columns(['workspace_id', 'name']).doUpdateSet({ state: null, revision }))
    .execute();
  return token;
}

/**
 * Revokes every live token of every agent of a workspace and clears their states: its agents
 * are gone (stop and delete builds call this once the runtime removed them).
 */
export async function revokeAgentTokens(db: Kysely<Database>, workspaceId: string, now: Date): Promise<void> {
  await db
    .updateTable('agent_tokens')
    .set({ revoked_at: iso(now) })
    .where('workspace_id', '=', workspaceId)
    .where('revoked_at', 'is', null)
    .execute();
  await db.updateTable('agents').set({ state: null }).where('workspace_id', '=', workspaceId).execute();
}

/** The agent, workspace and build a token opens, or undefined when it is unknown, revoked or its workspace is deleted. */
export async function authenticateAgent(db: Kysely<Database>, token: string): Promise<AgentIdentity | undefined> {
  if (!token.startsWith(TOKEN_PREFIX) || token.length > 128) return undefined;
  const row = await db
    .selectFrom('agent_tokens')
    .innerJoin('workspaces', 'workspaces.id', 'agent_tokens.workspace_id')
    .innerJoin('users', 'users.id', 'workspaces.owner_id')
    .select([
      'agent_tokens.workspace_id',
      'agent_tokens.agent_name',
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
    agentName: row.agent_name,
    workspaceName: row.workspace_name,
    ownerName: row.owner_name,
    buildId: row.build_id,
    manifest: manifest.success ? manifest.data : agentManifestSchema.parse({}),
  };
}

/** The build whose token is live for an agent (the build the agent that connects now belongs to). */
export async function currentAgentBuild(db: Kysely<Database>, target: AgentTarget): Promise<string | undefined> {
  const { workspaceId, agent } = agentRef(target);
  const row = await db
    .selectFrom('agent_tokens')
    .select('build_id')
    .where('workspace_id', '=', workspaceId)
    .where('agent_name', '=', agent)
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return row?.build_id;
}

export function hashAgentToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}
