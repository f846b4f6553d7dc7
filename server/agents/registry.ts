import type { Kysely } from 'kysely';
import type { AgentDto } from '../../protocol/workspaces.ts';
import type { Database } from '../store/schema.ts';
import { iso } from '../store/time.ts';
import { MAIN_AGENT } from '../../protocol/agent.ts';

/**
 * The agents table: one row per agent of a workspace (its main agent and one beside each
 * service that asks for one), written by the hub of whichever replica holds the agent's
 * connection and by token issue; read here for `den show` and the start and stop builds.
 */

/** The names of the agents a workspace has had a token for since it last stopped or was planned (main first). */
export async function workspaceAgents(db: Kysely<Database>, workspaceId: string): Promise<string[]> {
  const rows = await db.selectFrom('agents').select('name').where('workspace_id', '=', workspaceId).orderBy('name').execute();
  return rows.map((row) => row.name).sort((a, b) => Number(b === MAIN_AGENT) - Number(a === MAIN_AGENT));
}

/**
 * Forgets the agents a workspace's new plan no longer runs (a service that dropped `agent: true`
 * or was removed): their tokens are revoked and their rows deleted.
 */
export async function forgetUnplannedAgents(db: Kysely<Database>, workspaceId: string, planned: readonly string[], now: Date): Promise<void> {
  const gone = (await workspaceAgents(db, workspaceId)).filter((name) => !planned.includes(name));
  if (gone.length === 0) return;
  await db.updateTable('agent_tokens').set({ revoked_at: iso(now) })
    .where('workspace_id', '=', workspaceId).where('agent_name', 'in', gone).where('revoked_at', 'is', null).execute();
  await db.deleteFrom('agents').where('workspace_id', '=', workspaceId).where('name', 'in', gone).execute();
}

/** Every agent of a workspace with its state and connection times, the main agent first (`den show`). */
export async function listAgents(db: Kysely<Database>, workspaceId: string): Promise<AgentDto[]> {
  const rows = await db.selectFrom('agents').selectAll().where('workspace_id', '=', workspaceId).orderBy('name').execute();
  return rows
    .sort((a, b) => Number(b.name === MAIN_AGENT) - Number(a.name === MAIN_AGENT))
    .map((row) => ({
      name: row.name,
      service: row.name === MAIN_AGENT ? null : row.name,
      state: row.state,
      connected: row.connected_at !== null && row.disconnected_at === null,
      connectedAt: row.connected_at,
      disconnectedAt: row.disconnected_at,
    }));
}
