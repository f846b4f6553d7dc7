import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { EnvironmentGrantDto } from '../../protocol/environments.ts';
import type { Principal } from '../http/auth-types.ts';
import type { Database } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import { getUser } from '../users/users.ts';
import { canAccessWorkspace, findLiveWorkspace, workspaceNotFound, type WorkspaceRow } from '../workspaces/access.ts';
import { recordWorkspaceEvent } from '../workspaces/events.ts';

/**
 * Teammates: a workspace's owner grants another user a read-only view of its environment
 * (services, status, versions, task and test results, logs, app URLs). A grant names a user;
 * den has no groups, so a team is granted one user at a time. Nothing else of the workspace
 * opens to a teammate: every other route still asks findWorkspaceFor, which knows no grants,
 * so its terminal, exec, files, SSH, ports and secrets stay 404 to them. Every view by a
 * teammate is recorded among the workspace's events, which its owner reads (`den events`).
 */
export type Viewer = 'owner' | 'teammate';

export type ViewedWorkspace = WorkspaceRow & { owner_name: string };

/**
 * The workspace as the environment's read routes see it: its owner (or den's owner role) as
 * 'owner', a user with a grant as 'teammate' (the view recorded as `what`), anyone else 404
 * WORKSPACE_NOT_FOUND, exactly as for a workspace that does not exist.
 */
export async function findEnvironmentFor(
  db: Kysely<Database>, clock: Clock, principal: Principal, ownerName: string, workspaceName: string, what: string,
): Promise<{ row: ViewedWorkspace; viewer: Viewer }> {
  const row = await findLiveWorkspace(db, ownerName, workspaceName);
  if (!row) throw workspaceNotFound(ownerName, workspaceName);
  if (canAccessWorkspace(principal, row.owner_id)) return { row, viewer: 'owner' };
  if (!(await hasGrant(db, row.id, principal.userId))) throw workspaceNotFound(ownerName, workspaceName);
  await recordWorkspaceEvent(db, clock.now(), {
    workspaceId: row.id,
    kind: 'environment.viewed',
    message: `Teammate ${principal.username} viewed the environment: ${what}.`,
    detail: { by: principal.username, what },
  });
  return { row, viewer: 'teammate' };
}

export async function hasGrant(db: Kysely<Database>, workspaceId: string, userId: string): Promise<boolean> {
  const row = await db.selectFrom('environment_grants').select('user_id').where('workspace_id', '=', workspaceId).where('user_id', '=', userId).executeTakeFirst();
  return row !== undefined;
}

/** Lets `username` see the workspace's environment read-only; recorded among its events. Granting twice keeps the first grant. */
export async function grantEnvironment(db: Kysely<Database>, clock: Clock, workspace: ViewedWorkspace, username: string, by: string): Promise<EnvironmentGrantDto> {
  const user = await getUser(db, username);
  const label = `${workspace.owner_name}/${workspace.name}`;
  if (user.id === workspace.owner_id) {
    throw new AppError('GRANT_NOT_ALLOWED', `${username} owns ${label} and sees its environment already; grant it to a teammate instead.`);
  }
  const now = iso(clock.now());
  await db.insertInto('environment_grants').values({ workspace_id: workspace.id, user_id: user.id, granted_by: by, created_at: now })
    .onConflict((conflict) => conflict.columns(['workspace_id', 'user_id']).doNothing()).execute();
  await recordWorkspaceEvent(db, clock.now(), {
    workspaceId: workspace.id,
    kind: 'environment.grant',
    message: `${username} may now see the environment of ${label} read-only (granted by ${by}).`,
    detail: { user: username, by },
  });
  const row = await db.selectFrom('environment_grants').selectAll().where('workspace_id', '=', workspace.id).where('user_id', '=', user.id).executeTakeFirstOrThrow();
  return { user: username, grantedBy: row.granted_by, createdAt: row.created_at };
}

export async function revokeEnvironment(db: Kysely<Database>, clock: Clock, workspace: ViewedWorkspace, username: string, by: string): Promise<void> {
  const label = `${workspace.owner_name}/${workspace.name}`;
  const user = await getUser(db, username);
  const result = await db.deleteFrom('environment_grants').where('workspace_id', '=', workspace.id).where('user_id', '=', user.id).executeTakeFirst();
  if (Number(result.numDeletedRows) === 0) {
    throw new AppError('GRANT_NOT_FOUND', `${username} has no grant on the environment of ${label}. Run \`den env grants ${label}\` to see who has one.`);
  }
  await recordWorkspaceEvent(db, clock.now(), {
    workspaceId: workspace.id,
    kind: 'environment.revoke',
    message: `${username} may no longer see the environment of ${label} (revoked by ${by}).`,
    detail: { user: username, by },
  });
}

export async function listGrants(db: Kysely<Database>, workspaceId: string): Promise<EnvironmentGrantDto[]> {
  const rows = await db.selectFrom('environment_grants').innerJoin('users', 'users.id', 'environment_grants.user_id')
    .select(['users.username', 'environment_grants.granted_by', 'environment_grants.created_at'])
    .where('environment_grants.workspace_id', '=', workspaceId).orderBy('users.username').execute();
  return rows.map((row) => ({ user: row.username, grantedBy: row.granted_by, createdAt: row.created_at }));
}
