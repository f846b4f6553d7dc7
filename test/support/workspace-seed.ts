import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Database, Role } from '../../server/store/schema.ts';

export interface SeededWorkspace {
  userId: string;
  username: string;
  workspaceId: string;
  workspaceName: string;
  buildId: string;
}

/**
 * Inserts a user, a template with one version, a running workspace and its start build straight
 * into the store: for tests of layers below the workspace API (the agent link, runtimes).
 */
export async function seedWorkspace(
  db: Kysely<Database>,
  options: { username: string; workspaceName: string; role?: Role; userId?: string },
): Promise<SeededWorkspace> {
  const now = new Date().toISOString();
  const userId = options.userId ?? randomUUID();
  if (!options.userId) {
    await db
      .insertInto('users')
      .values({ id: userId, username: options.username, display_name: options.username, role: options.role ?? 'member', password_hash: null, suspended: 0, created_at: now, updated_at: now })
      .execute();
  }
  const templateId = randomUUID();
  const versionId = randomUUID();
  await db
    .insertInto('templates')
    .values({ id: templateId, name: `t-${templateId.slice(0, 8)}`, display_name: 'Test', description: '', icon: null, active_version_id: null, created_by: userId, created_at: now, updated_at: now })
    .execute();
  await db
    .insertInto('template_versions')
    .values({ id: versionId, template_id: templateId, number: 1, spec_json: '{}', files_json: '{}', message: '', created_by: userId, created_at: now })
    .execute();
  await db.updateTable('templates').set({ active_version_id: versionId }).where('id', '=', templateId).execute();
  const workspaceId = randomUUID();
  const buildId = randomUUID();
  await db
    .insertInto('workspaces')
    .values({
      id: workspaceId, name: options.workspaceName, owner_id: userId, template_id: templateId, template_version_id: versionId,
      params_json: '{}', status: 'running', last_build_id: buildId, created_at: now, updated_at: now, deleted_at: null,
    })
    .execute();
  await db
    .insertInto('builds')
    .values({
      id: buildId, workspace_id: workspaceId, number: 1, transition: 'start', reason: 'test', initiator_id: userId,
      template_version_id: versionId, params_json: '{}', state: 'running', error: null, steps_json: '[]',
      lease_owner: null, lease_expires_at: null, attempts: 0, created_at: now, started_at: now, finished_at: null,
    })
    .execute();
  return { userId, username: options.username, workspaceId, workspaceName: options.workspaceName, buildId };
}
