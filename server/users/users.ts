import { sql, type Kysely, type Selectable, type Transaction } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { CreateUserRequest, UpdateUserRequest, UserDto } from '../../protocol/users.ts';
import { hashPassword } from '../auth/passwords.ts';
import type { Revocation, RevocationBus } from '../auth/revocations.ts';
import { deleteSessionsOfUser } from '../auth/sessions.ts';
import { deleteAppTokensOfUser } from '../apps/app-tokens.ts';
import type { Store } from '../store/connect.ts';
import type { Database, Role, UsersTable } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import { isUniqueViolation } from '../store/unique.ts';

/**
 * Accounts: the first user, user management by owners, and the rule that den always keeps at
 * least one active owner. Changes that count owners run in a transaction that locks the users
 * table on PostgreSQL (SQLite transactions are already serialized), so two concurrent requests
 * cannot both pass the count.
 */

export type UserRow = Selectable<UsersTable>;

export interface NewUser {
  username: string;
  password: string;
  role: Role;
  displayName?: string;
}

export async function isSetupRequired(db: Kysely<Database>): Promise<boolean> {
  const row = await db.selectFrom('users').select('id').limit(1).executeTakeFirst();
  return row === undefined;
}

/** Creates the first user as owner; 409 FIRST_USER_EXISTS once any user exists, even under a race. */
export async function createFirstUser(store: Store, clock: Clock, input: Omit<NewUser, 'role'>): Promise<UserRow> {
  const firstUserExists = () =>
    new AppError('FIRST_USER_EXISTS', 'This den server is already set up: its first user exists. Sign in with `den login` instead.');
  if (!(await isSetupRequired(store.db))) throw firstUserExists();
  // Hash outside the transaction: scrypt takes tens of milliseconds and must not hold the lock.
  const passwordHash = await hashPassword(input.password);
  try {
    return await store.db.transaction().execute(async (trx) => {
      await lockUsers(trx, store.dialect);
      if (!(await isSetupRequired(trx))) throw firstUserExists();
      return insertUser(trx, clock, { ...input, role: 'owner' }, passwordHash);
    });
  } catch (error) {
    if (isUniqueViolation(error)) throw firstUserExists();
    throw error;
  }
}

export async function createUser(db: Kysely<Database>, clock: Clock, input: CreateUserRequest): Promise<UserRow> {
  const passwordHash = await hashPassword(input.password);
  try {
    return await insertUser(db, clock, { ...input, role: input.role ?? 'member' }, passwordHash);
  } catch (error) {
    if (isUniqueViolation(error)) {
      throw new AppError('USER_EXISTS', `A user named '${input.username}' already exists. Choose another username.`);
    }
    throw error;
  }
}

export async function listUsers(db: Kysely<Database>): Promise<UserRow[]> {
  return db.selectFrom('users').selectAll().orderBy('username').execute();
}

export async function findUserByUsername(db: Kysely<Database>, username: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirst();
}

export async function getUser(db: Kysely<Database>, username: string): Promise<UserRow> {
  const row = await findUserByUsername(db, username);
  if (!row) throw userNotFound(username);
  return row;
}

export async function getUserById(db: Kysely<Database>, id: string): Promise<UserRow> {
  const row = await db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
  if (!row) throw userNotFound(id);
  return row;
}

/**
 * Changes role, suspension, display name or password. Demoting or suspending the last active
 * owner fails with LAST_OWNER. Suspension and password changes end the user's sessions and app
 * host cookies; what the change takes away is announced on `revocations` once it is committed.
 */
export async function updateUser(
  store: Store,
  clock: Clock,
  revocations: RevocationBus,
  username: string,
  patch: UpdateUserRequest,
): Promise<UserRow> {
  const passwordHash = patch.password !== undefined ? await hashPassword(patch.password) : undefined;
  const { user, updated } = await store.db.transaction().execute(async (trx) => {
    await lockUsers(trx, store.dialect);
    const user = await getUser(trx, username);
    const losesOwner =
      user.role === 'owner' && !user.suspended &&
      ((patch.role !== undefined && patch.role !== 'owner') || patch.suspended === true);
    if (losesOwner) await ensureAnotherActiveOwner(trx, user);
    const updated: UserRow = {
      ...user,
      role: patch.role ?? user.role,
      suspended: patch.suspended === undefined ? user.suspended : patch.suspended ? 1 : 0,
      display_name: patch.displayName ?? user.display_name,
      password_hash: passwordHash ?? user.password_hash,
      updated_at: iso(clock.now()),
    };
    await trx
      .updateTable('users')
      .set({
        role: updated.role,
        suspended: updated.suspended,
        display_name: updated.display_name,
        password_hash: updated.password_hash,
        updated_at: updated.updated_at,
      })
      .where('id', '=', user.id)
      .execute();
    if (patch.suspended === true || passwordHash !== undefined) {
      await deleteSessionsOfUser(trx, user.id);
      await deleteAppTokensOfUser(trx, user.id);
    }
    return { user, updated };
  });
  // After the commit, so that nobody who hears of it can still read the old state.
  for (const revocation of revocationsOfUpdate(user, updated, passwordHash !== undefined)) revocations.publish(revocation);
  return updated;
}

/** Deletes a user with their sessions, tokens and keys. Not the last owner; not while workspaces reference them. */
export async function deleteUser(store: Store, revocations: RevocationBus, username: string): Promise<void> {
  const userId = await store.db.transaction().execute(async (trx) => {
    await lockUsers(trx, store.dialect);
    const user = await getUser(trx, username);
    if (user.role === 'owner' && !user.suspended) await ensureAnotherActiveOwner(trx, user);
    const workspace = await trx
      .selectFrom('workspaces')
      .select(['name', 'deleted_at'])
      .where('owner_id', '=', user.id)
      .orderBy('deleted_at', 'desc')
      .limit(1)
      .executeTakeFirst();
    if (workspace) {
      throw new AppError(
        'USER_HAS_WORKSPACES',
        workspace.deleted_at === null
          ? `User '${username}' still owns workspaces (for example '${workspace.name}'). Delete them first, or suspend the user instead.`
          : `User '${username}' has workspace history that den keeps for auditing. Suspend the user instead of deleting them.`,
      );
    }
    // Sessions, tokens and keys cascade with the user row.
    await trx.deleteFrom('users').where('id', '=', user.id).execute();
    return user.id;
  });
  revocations.publish({ kind: 'user', userId, reason: 'deleted' });
}

export function toUserDto(row: UserRow): UserDto {
  return {
    id: row.id,
    username: row.username,
    displayName: row.display_name,
    role: row.role,
    suspended: Boolean(row.suspended),
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}

/**
 * What an update takes away. Suspension ends everything; a password change ends the cookie
 * sessions (API tokens stay: they are revoked one by one); any role change is announced, since
 * cached principals carry the role and a demoted owner loses other users' workspaces.
 */
function revocationsOfUpdate(before: UserRow, after: UserRow, passwordChanged: boolean): Revocation[] {
  if (after.suspended && !before.suspended) return [{ kind: 'user', userId: after.id, reason: 'suspended' }];
  const revocations: Revocation[] = [];
  if (passwordChanged) revocations.push({ kind: 'sessions', userId: after.id, reason: 'password-changed' });
  if (after.role !== before.role) revocations.push({ kind: 'role', userId: after.id, role: after.role });
  return revocations;
}

async function insertUser(
  db: Kysely<Database>,
  clock: Clock,
  input: NewUser,
  passwordHash: string,
): Promise<UserRow> {
  const now = iso(clock.now());
  const row: UserRow = {
    id: crypto.randomUUID(),
    username: input.username,
    display_name: input.displayName?.trim() || input.username,
    role: input.role,
    password_hash: passwordHash,
    suspended: 0,
    created_at: now,
    updated_at: now,
  };
  await db.insertInto('users').values(row).execute();
  return row;
}

async function ensureAnotherActiveOwner(trx: Kysely<Database>, user: UserRow): Promise<void> {
  const other = await trx
    .selectFrom('users')
    .select('id')
    .where('role', '=', 'owner')
    .where('suspended', '=', 0)
    .where('id', '!=', user.id)
    .limit(1)
    .executeTakeFirst();
  if (!other) {
    throw new AppError(
      'LAST_OWNER',
      `User '${user.username}' is the last active owner of this den server. Make another user an owner first.`,
    );
  }
}

/**
 * Serializes account changes that depend on counting users. SHARE ROW EXCLUSIVE conflicts with
 * itself, so a second setup or owner change waits until the first commits, then sees its result.
 */
async function lockUsers(trx: Transaction<Database>, dialect: Store['dialect']): Promise<void> {
  if (dialect === 'postgres') await sql`lock table users in share row exclusive mode`.execute(trx);
}

function userNotFound(name: string): AppError {
  return new AppError('USER_NOT_FOUND', `There is no user '${name}'. Run \`den users list\` to see the users.`);
}
