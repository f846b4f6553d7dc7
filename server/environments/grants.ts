import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { EnvironmentGrantDto, SharedEnvironmentDto } from '../../protocol/environments.ts';
import type { Principal } from '../http/auth-types.ts';
import type { Database } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import { findGroup } from '../groups/groups.ts';
import { getUser } from '../users/users.ts';
import { canAccessWorkspace, findLiveWorkspace, workspaceNotFound, type WorkspaceRow } from '../workspaces/access.ts';
import { recordWorkspaceEvent } from '../workspaces/events.ts';

/**
 * Teammates: a workspace's owner grants another user, or a group of users, a read-only view of
 * its environment (services, status, versions, sync state, task and test results, logs, app
 * URLs). A group grant is read through membership at every request, so a member added or
 * removed (or the group deleted) sees or stops seeing the environment at once. Nothing else of the workspace
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

/** Whether a grant on the workspace names the user, or one of the groups the user is in. */
export async function hasGrant(db: Kysely<Database>, workspaceId: string, userId: string): Promise<boolean> {
  const direct = await db.selectFrom('environment_grants').select('user_id').where('workspace_id', '=', workspaceId).where('user_id', '=', userId).executeTakeFirst();
  if (direct) return true;
  const viaGroup = await db.selectFrom('environment_group_grants')
    .innerJoin('group_members', 'group_members.group_id', 'environment_group_grants.group_id')
    .select('group_members.user_id')
    .where('environment_group_grants.workspace_id', '=', workspaceId).where('group_members.user_id', '=', userId)
    .executeTakeFirst();
  return viaGroup !== undefined;
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

/** Lets the members of `groupName` see the workspace's environment read-only, whoever they are at each request. Granting twice keeps the first grant. */
export async function grantEnvironmentToGroup(db: Kysely<Database>, clock: Clock, workspace: ViewedWorkspace, groupName: string, by: string): Promise<EnvironmentGrantDto> {
  const group = await findGroup(db, groupName);
  const label = `${workspace.owner_name}/${workspace.name}`;
  await db.insertInto('environment_group_grants').values({ workspace_id: workspace.id, group_id: group.id, granted_by: by, created_at: iso(clock.now()) })
    .onConflict((conflict) => conflict.columns(['workspace_id', 'group_id']).doNothing()).execute();
  await recordWorkspaceEvent(db, clock.now(), {
    workspaceId: workspace.id,
    kind: 'environment.grant',
    message: `The members of the group ${groupName} may now see the environment of ${label} read-only (granted by ${by}).`,
    detail: { group: groupName, by },
  });
  const row = await db.selectFrom('environment_group_grants').selectAll().where('workspace_id', '=', workspace.id).where('group_id', '=', group.id).executeTakeFirstOrThrow();
  return { group: groupName, grantedBy: row.granted_by, createdAt: row.created_at };
}

export async function revokeEnvironmentFromGroup(db: Kysely<Database>, clock: Clock, workspace: ViewedWorkspace, groupName: string, by: string): Promise<void> {
  const label = `${workspace.owner_name}/${workspace.name}`;
  const group = await findGroup(db, groupName);
  const result = await db.deleteFrom('environment_group_grants').where('workspace_id', '=', workspace.id).where('group_id', '=', group.id).executeTakeFirst();
  if (Number(result.numDeletedRows) === 0) {
    throw new AppError('GRANT_NOT_FOUND', `The group ${groupName} has no grant on the environment of ${label}. Run \`den env grants ${label}\` to see who has one.`);
  }
  await recordWorkspaceEvent(db, clock.now(), {
    workspaceId: workspace.id,
    kind: 'environment.revoke',
    message: `The members of the group ${groupName} may no longer see the environment of ${label} (revoked by ${by}).`,
    detail: { group: groupName, by },
  });
}

/**
 * Tells the owner of every workspace the group has a grant on that who sees its environment
 * changed (`message`, a sentence about the group): a workspace event each, as for a grant.
 * Called before a change that removes the grants (a deleted group), so they are still found.
 */
export async function recordGroupChangeOnGrants(db: Kysely<Database>, clock: Clock, groupName: string, message: string, detail: Record<string, unknown>): Promise<void> {
  const rows = await db.selectFrom('environment_group_grants').innerJoin('groups', 'groups.id', 'environment_group_grants.group_id')
    .select('environment_group_grants.workspace_id').where('groups.name', '=', groupName).execute();
  for (const row of rows) {
    await recordWorkspaceEvent(db, clock.now(), { workspaceId: row.workspace_id, kind: 'environment.group-changed', message, detail: { group: groupName, ...detail } });
  }
}

/** The live environments others granted `userId`, directly or through a group (not the user's own, through a group they are in), by owner and name. */
export async function sharedWith(db: Kysely<Database>, userId: string): Promise<SharedEnvironmentDto[]> {
  const direct = await db.selectFrom('environment_grants').innerJoin('workspaces', 'workspaces.id', 'environment_grants.workspace_id')
    .innerJoin('users', 'users.id', 'workspaces.owner_id')
    .select(['workspaces.id', 'workspaces.name', 'workspaces.status', 'users.username as owner'])
    .where('environment_grants.user_id', '=', userId).where('workspaces.deleted_at', 'is', null).where('workspaces.owner_id', '!=', userId).execute();
  const viaGroups = await db.selectFrom('environment_group_grants').innerJoin('group_members', 'group_members.group_id', 'environment_group_grants.group_id')
    .innerJoin('groups', 'groups.id', 'environment_group_grants.group_id')
    .innerJoin('workspaces', 'workspaces.id', 'environment_group_grants.workspace_id')
    .innerJoin('users', 'users.id', 'workspaces.owner_id')
    .select(['workspaces.id', 'workspaces.name', 'workspaces.status', 'users.username as owner', 'groups.name as group_name'])
    .where('group_members.user_id', '=', userId).where('workspaces.deleted_at', 'is', null).where('workspaces.owner_id', '!=', userId).execute();
  const byId = new Map<string, SharedEnvironmentDto>();
  const entry = (row: { id: string; name: string; status: string; owner: string }) => {
    let found = byId.get(row.id);
    if (!found) {
      found = { workspace: `${row.owner}/${row.name}`, owner: row.owner, name: row.name, status: row.status, direct: false, groups: [] };
      byId.set(row.id, found);
    }
    return found;
  };
  for (const row of direct) entry(row).direct = true;
  for (const row of viaGroups) entry(row).groups.push(row.group_name);
  for (const found of byId.values()) found.groups.sort();
  return [...byId.values()].sort((a, b) => a.workspace.localeCompare(b.workspace));
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

/** The workspace's grants: users by name, then groups by name. */
export async function listGrants(db: Kysely<Database>, workspaceId: string): Promise<EnvironmentGrantDto[]> {
  const users = await db.selectFrom('environment_grants').innerJoin('users', 'users.id', 'environment_grants.user_id')
    .select(['users.username', 'environment_grants.granted_by', 'environment_grants.created_at'])
    .where('environment_grants.workspace_id', '=', workspaceId).orderBy('users.username').execute();
  const groups = await db.selectFrom('environment_group_grants').innerJoin('groups', 'groups.id', 'environment_group_grants.group_id')
    .select(['groups.name', 'environment_group_grants.granted_by', 'environment_group_grants.created_at'])
    .where('environment_group_grants.workspace_id', '=', workspaceId).orderBy('groups.name').execute();
  return [
    ...users.map((row) => ({ user: row.username, grantedBy: row.granted_by, createdAt: row.created_at })),
    ...groups.map((row) => ({ group: row.name, grantedBy: row.granted_by, createdAt: row.created_at })),
  ];
}
