import { MAIN_AGENT } from '../../protocol/agent.ts';
import type { Kysely, Selectable } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { TrackedWorkspace } from '../auth/live-access.ts';
import type { Principal } from '../http/auth-types.ts';
import { compiledOnce } from '../store/compiled-once.ts';
import type { Database, WorkspacesTable } from '../store/schema.ts';

export type WorkspaceRow = Selectable<WorkspacesTable>;

/**
 * Finds a live workspace by owner name and workspace name, as seen by `principal`.
 * The owner role sees every workspace; everyone else sees only their own. A workspace the
 * caller may not see is reported as not found, so names of others' workspaces do not leak.
 */
export async function findWorkspaceFor(
  db: Kysely<Database>,
  principal: Principal,
  ownerName: string,
  workspaceName: string,
): Promise<WorkspaceRow & { owner_name: string }> {
  const row = await findLiveWorkspace(db, ownerName, workspaceName);
  if (!row || !canAccessWorkspace(principal, row.owner_id)) throw workspaceNotFound(ownerName, workspaceName);
  return row;
}

/**
 * A live workspace by owner and name, whoever asks: callers decide who may see it (findWorkspaceFor,
 * environments/grants.ts). Every request to an app URL runs it, so it is compiled once (building
 * the query took more CPU than SQLite takes to answer it).
 */
export async function findLiveWorkspace(db: Kysely<Database>, ownerName: string, workspaceName: string): Promise<(WorkspaceRow & { owner_name: string }) | undefined> {
  return (await db.executeQuery(liveWorkspace(db, ownerName, workspaceName))).rows[0];
}

const liveWorkspace = compiledOnce(
  (db, ownerName: string, workspaceName: string) =>
    db
      .selectFrom('workspaces')
      .innerJoin('users', 'users.id', 'workspaces.owner_id')
      .selectAll('workspaces')
      .select('users.username as owner_name')
      .where('users.username', '=', ownerName)
      .where('workspaces.name', '=', workspaceName)
      .where('workspaces.deleted_at', 'is', null),
  ['\u0000owner', '\u0000name'],
);

/** The answer for a workspace that does not exist or that the caller may not see: the same in both cases, so names do not leak. */
export function workspaceNotFound(ownerName: string, workspaceName: string): AppError {
  return new AppError('WORKSPACE_NOT_FOUND', `There is no workspace '${ownerName}/${workspaceName}'. Run \`den list\` to see your workspaces.`);
}

/** The workspace as a long-lived connection to it is tracked (auth/plugin.ts trackLiveAccess): by the same rule as every route. */
export function trackedWorkspace(row: { owner_id: string; owner_name: string; name: string }): TrackedWorkspace {
  return { label: `${row.owner_name}/${row.name}`, allows: (principal) => canAccessWorkspace(principal, row.owner_id) };
}

export function canAccessWorkspace(principal: Pick<Principal, 'userId' | 'role'>, ownerId: string): boolean {
  return principal.role === 'owner' || principal.userId === ownerId;
}

/** Who a workspace is to a runtime (its id, name and owner), found by id whatever its status; undefined once the row is gone. */
export async function getWorkspaceIdentity(db: Kysely<Database>, workspaceId: string): Promise<{ id: string; name: string; ownerId: string; ownerName: string; template?: string; agentState: string | null } | undefined> {
  const row = await db
    .selectFrom('workspaces')
    .innerJoin('users', 'users.id', 'workspaces.owner_id')
    .leftJoin('agents', (join) => join.onRef('agents.workspace_id', '=', 'workspaces.id').on('agents.name', '=', MAIN_AGENT))
    .leftJoin('templates', 'templates.id', 'workspaces.template_id')
    .select(['workspaces.id', 'workspaces.name', 'workspaces.owner_id', 'agents.state as agent_state', 'users.username', 'templates.name as template_name'])
    .where('workspaces.id', '=', workspaceId)
    .executeTakeFirst();
  return row && {
    id: row.id, name: row.name, ownerId: row.owner_id, ownerName: row.username, agentState: row.agent_state ?? null,
    ...(row.template_name ? { template: row.template_name } : {}),
  };
}
