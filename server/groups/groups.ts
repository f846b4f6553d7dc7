import type { Kysely, Selectable } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { CreateGroupRequest, GroupDto, GroupEventDto, GroupSummaryDto } from '../../protocol/groups.ts';
import type { Database, GroupsTable } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import { isUniqueViolation } from '../store/unique.ts';
import { getUser } from '../users/users.ts';

/**
 * Groups of users, set by den's owners. A group means nothing by itself: a workspace's owner
 * grants a group the read-only view of the environment (server/environments/grants.ts), and
 * access follows membership at every request, so adding or removing a member changes what they
 * see at once. Every change is recorded in `group_events` under the group's name, which
 * outlives the group (`den groups history`).
 */
export type GroupRow = Selectable<GroupsTable>;

export async function listGroups(db: Kysely<Database>): Promise<GroupSummaryDto[]> {
  const rows = await db.selectFrom('groups').leftJoin('group_members', 'group_members.group_id', 'groups.id')
    .select(['groups.name', 'groups.description', 'groups.created_by', 'groups.created_at', (eb) => eb.fn.count<number | string>('group_members.user_id').as('members')])
    .groupBy(['groups.id', 'groups.name', 'groups.description', 'groups.created_by', 'groups.created_at'])
    .orderBy('groups.name').execute();
  return rows.map((row) => ({ name: row.name, description: row.description, members: Number(row.members), createdBy: row.created_by, createdAt: row.created_at }));
}

export async function findGroup(db: Kysely<Database>, name: string): Promise<GroupRow> {
  const row = await db.selectFrom('groups').selectAll().where('name', '=', name).executeTakeFirst();
  if (!row) throw new AppError('GROUP_NOT_FOUND', `There is no group '${name}'. Run \`den groups list\` to see the groups.`);
  return row;
}

export async function getGroup(db: Kysely<Database>, name: string): Promise<GroupDto> {
  const group = await findGroup(db, name);
  const members = await db.selectFrom('group_members').innerJoin('users', 'users.id', 'group_members.user_id')
    .select(['users.username', 'group_members.added_by', 'group_members.created_at'])
    .where('group_members.group_id', '=', group.id).orderBy('users.username').execute();
  return {
    name: group.name, description: group.description, createdBy: group.created_by, createdAt: group.created_at,
    members: members.map((member) => ({ user: member.username, addedBy: member.added_by, addedAt: member.created_at })),
  };
}

export async function createGroup(db: Kysely<Database>, clock: Clock, input: CreateGroupRequest, by: string): Promise<GroupDto> {
  const now = iso(clock.now());
  try {
    await db.transaction().execute(async (trx) => {
      await trx.insertInto('groups').values({ id: crypto.randomUUID(), name: input.name, description: input.description?.trim() ?? '', created_by: by, created_at: now }).execute();
      await recordGroupEvent(trx, now, input.name, 'group.created', by, `${by} created the group ${input.name}.`);
    });
  } catch (error) {
    if (isUniqueViolation(error)) throw new AppError('GROUP_EXISTS', `A group named '${input.name}' already exists. Choose another name, or add members to it with \`den groups add ${input.name} USER\`.`);
    throw error;
  }
  return getGroup(db, input.name);
}

/** Deletes the group; its members lose every grant they had through it (the grants go with it). */
export async function deleteGroup(db: Kysely<Database>, clock: Clock, name: string, by: string): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const group = await findGroup(trx, name);
    await trx.deleteFrom('groups').where('id', '=', group.id).execute();
    await recordGroupEvent(trx, iso(clock.now()), name, 'group.deleted', by, `${by} deleted the group ${name}.`);
  });
}

/** Adds a user to the group; adding a member twice keeps the first addition (`added` false). */
export async function addGroupMember(db: Kysely<Database>, clock: Clock, name: string, username: string, by: string): Promise<{ group: GroupDto; added: boolean }> {
  const group = await findGroup(db, name);
  const user = await getUser(db, username);
  const now = iso(clock.now());
  const added = await db.transaction().execute(async (trx) => {
    const result = await trx.insertInto('group_members').values({ group_id: group.id, user_id: user.id, added_by: by, created_at: now })
      .onConflict((conflict) => conflict.columns(['group_id', 'user_id']).doNothing()).executeTakeFirst();
    if (Number(result.numInsertedOrUpdatedRows ?? 0) === 0) return false;
    await recordGroupEvent(trx, now, name, 'group.member-added', by, `${by} added ${username} to the group ${name}.`);
    return true;
  });
  return { group: await getGroup(db, name), added };
}

export async function removeGroupMember(db: Kysely<Database>, clock: Clock, name: string, username: string, by: string): Promise<void> {
  const group = await findGroup(db, name);
  const user = await getUser(db, username);
  await db.transaction().execute(async (trx) => {
    const removed = await trx.deleteFrom('group_members').where('group_id', '=', group.id).where('user_id', '=', user.id).executeTakeFirst();
    if (Number(removed.numDeletedRows) === 0) {
      throw new AppError('GROUP_MEMBER_NOT_FOUND', `User '${username}' is not a member of the group '${name}'. Run \`den groups show ${name}\` to see its members.`);
    }
    await recordGroupEvent(trx, iso(clock.now()), name, 'group.member-removed', by, `${by} removed ${username} from the group ${name}.`);
  });
}

/** The groups' history, newest first; of one group (by name, also after it was deleted) when `group` is given. */
export async function listGroupEvents(db: Kysely<Database>, query: { group?: string; limit: number }): Promise<GroupEventDto[]> {
  let select = db.selectFrom('group_events').selectAll().orderBy('id', 'desc').limit(query.limit);
  if (query.group !== undefined) select = select.where('group_name', '=', query.group);
  const rows = await select.execute();
  return rows.map((row) => ({ id: Number(row.id), group: row.group_name, ts: row.ts, kind: row.kind, by: row.by, message: row.message }));
}

async function recordGroupEvent(db: Kysely<Database>, ts: string, group: string, kind: string, by: string, message: string): Promise<void> {
  await db.insertInto('group_events').values({ group_name: group, ts, kind, by, message }).execute();
}
