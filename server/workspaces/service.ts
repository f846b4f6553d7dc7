import { randomUUID } from 'node:crypto';
import { AppError } from '../../protocol/errors.ts';
import type { TemplateSpec } from '../../protocol/template.ts';
import {
  WORKSPACE_NAME, WORKSPACE_NAME_MAX, type BuildDto, type WorkspaceDto,
} from '../../protocol/workspaces.ts';
import type { AppContext } from '../http/app.ts';
import { assertCapabilities } from '../runtimes/capabilities.ts';
import type { Principal } from '../http/auth-types.ts';
import type { Database } from '../store/schema.ts';
import { iso } from '../store/time.ts';
import { resolveParameters, withoutEphemeral } from '../templates/parameters.ts';
import { getActiveVersion, getTemplateVersionById } from '../templates/store.ts';
import type { Kysely } from 'kysely';
import type { WorkspaceRow } from './access.ts';
import { getBuildById, getWorkspaceDto } from './queries.ts';

export interface CreateWorkspaceInput {
  name: string;
  template: string;
  params: Record<string, unknown>;
  owner?: string;
}

export type TransitionRequest =
  | { kind: 'start'; params: Record<string, unknown> }
  | { kind: 'stop' }
  | { kind: 'restart'; params: Record<string, unknown> }
  | { kind: 'delete' }
  | { kind: 'update'; params: Record<string, unknown> };

/**
 * Validates and creates a workspace: the row (status pending) and its first start build are
 * inserted in one transaction, so a failure leaves nothing behind.
 */
export async function createWorkspace(den: AppContext, principal: Principal, input: CreateWorkspaceInput): Promise<{ workspace: WorkspaceDto; build: BuildDto }> {
  checkWorkspaceName(input.name);
  const { db } = den.store;
  const owner = await resolveOwner(db, principal, input.owner);
  const { templateId, versionId, spec } = await activeVersion(db, input.template);
  const params = resolveParameters(spec, input.params);
  assertCapabilities(den.driver, spec);
  const now = den.clock.now();
  const workspaceId = randomUUID();
  let buildId: string;
  try {
    buildId = await db.transaction().execute(async (trx) => {
      const existing = await trx.selectFrom('workspaces').select('id')
        .where('owner_id', '=', owner.id).where('name', '=', input.name).where('deleted_at', 'is', null).executeTakeFirst();
      if (existing) throw workspaceExists(owner.username, input.name);
      await trx.insertInto('workspaces').values({
        id: workspaceId,
        name: input.name,
        owner_id: owner.id,
        template_id: templateId,
        template_version_id: versionId,
        params_json: JSON.stringify(withoutEphemeral(spec, params)),
        status: 'pending',
        agent_state: null,
        last_build_id: null,
        created_at: iso(now),
        updated_at: iso(now),
        deleted_at: null,
      }).execute();
      const build = await den.builds.enqueue({
        workspaceId, transition: 'start', reason: 'create', initiatorId: principal.userId,
        templateVersionId: versionId, params, now,
      }, trx);
      return build.id;
    });
  } catch (error) {
    // Two creates racing past the check above meet the unique index instead.
    if (isUniqueViolation(error)) throw workspaceExists(owner.username, input.name);
    throw error;
  }
  den.builds.wake();
  return { workspace: await getWorkspaceDto(db, workspaceId), build: await getBuildById(db, buildId) };
}

/** Queues the build for a transition. Returns the (first) build; restart chains stop -> start. */
export async function requestTransition(
  den: AppContext,
  principal: Principal,
  workspace: WorkspaceRow,
  request: TransitionRequest,
): Promise<{ workspace: WorkspaceDto; build: BuildDto }> {
  const { db } = den.store;
  const now = den.clock.now();
  const previous = JSON.parse(workspace.params_json) as Record<string, unknown>;
  const base = { workspaceId: workspace.id, initiatorId: principal.userId, now };
  let buildId: string;
  switch (request.kind) {
    case 'start': {
      if (workspace.status === 'running') {
        throw new AppError('WORKSPACE_ALREADY_IN_STATE', `Workspace '${workspace.name}' is already running. Use \`den restart\` to start it afresh.`);
      }
      const spec = await versionSpec(db, workspace.template_version_id);
      const params = resolveParameters(spec, request.params, previous);
      buildId = (await den.builds.enqueue({ ...base, transition: 'start', reason: 'start', templateVersionId: workspace.template_version_id, params })).id;
      break;
    }
    case 'stop':
      if (workspace.status === 'stopped') {
        throw new AppError('WORKSPACE_ALREADY_IN_STATE', `Workspace '${workspace.name}' is already stopped. Use \`den start\` to start it.`);
      }
      buildId = (await den.builds.enqueue({ ...base, transition: 'stop', reason: 'stop', templateVersionId: workspace.template_version_id, params: previous })).id;
      break;
    case 'restart': {
      const spec = await versionSpec(db, workspace.template_version_id);
      // Validate now, so a bad parameter fails the request instead of the start build later.
      const params = resolveParameters(spec, request.params, previous);
      buildId = (await den.builds.enqueue({ ...base, transition: 'stop', reason: 'restart', templateVersionId: workspace.template_version_id, params })).id;
      break;
    }
    case 'delete':
      buildId = (await den.builds.enqueue({ ...base, transition: 'delete', reason: 'delete', templateVersionId: workspace.template_version_id, params: previous })).id;
      break;
    case 'update': {
      const template = await db.selectFrom('templates').select('name').where('id', '=', workspace.template_id).executeTakeFirstOrThrow();
      const { versionId, spec } = await activeVersion(db, template.name);
      const params = resolveParameters(spec, request.params, previous);
      buildId = await db.transaction().execute(async (trx) => {
        const build = await den.builds.enqueue({ ...base, transition: 'start', reason: 'update', templateVersionId: versionId, params }, trx);
        await trx.updateTable('workspaces')
          .set({ template_version_id: versionId, params_json: JSON.stringify(withoutEphemeral(spec, params)), updated_at: iso(now) })
          .where('id', '=', workspace.id)
          .execute();
        return build.id;
      });
      den.builds.wake();
      break;
    }
  }
  return { workspace: await getWorkspaceDto(db, workspace.id), build: await getBuildById(db, buildId) };
}

export function checkWorkspaceName(name: string): void {
  if (name.length < 1 || name.length > WORKSPACE_NAME_MAX || !WORKSPACE_NAME.test(name)) {
    throw new AppError('WORKSPACE_NAME_INVALID',
      `'${name.length > 40 ? `${name.slice(0, 40)}…` : name}' is not a valid workspace name: use 1 to ${WORKSPACE_NAME_MAX} lowercase letters, digits and '-', starting and ending with a letter or digit (for example 'my-project').`,
      { validations: [{ field: 'body.name', detail: `must be a DNS label of 1-${WORKSPACE_NAME_MAX} characters` }] });
  }
}

async function resolveOwner(db: Kysely<Database>, principal: Principal, ownerName: string | undefined) {
  if (!ownerName || ownerName === principal.username) return { id: principal.userId, username: principal.username };
  if (principal.role !== 'owner') {
    throw new AppError('FORBIDDEN', 'Only the owner role may create workspaces for other users. Leave out `owner` to create your own.');
  }
  const user = await db.selectFrom('users').select(['id', 'username']).where('username', '=', ownerName).executeTakeFirst();
  if (!user) throw new AppError('USER_NOT_FOUND', `There is no user '${ownerName}'. Run \`den users list\` to see the users.`);
  return user;
}

async function activeVersion(db: Kysely<Database>, templateName: string): Promise<{ templateId: string; versionId: string; spec: TemplateSpec }> {
  const active = await getActiveVersion(db, templateName);
  return { templateId: active.template.id, versionId: active.version.id, spec: active.version.spec };
}

async function versionSpec(db: Kysely<Database>, versionId: string): Promise<TemplateSpec> {
  const version = await getTemplateVersionById(db, versionId);
  if (!version) {
    throw new AppError('TEMPLATE_VERSION_NOT_FOUND', 'The template version of this workspace no longer exists. Run `den update` to move it to the active version.');
  }
  return version.spec;
}

function workspaceExists(owner: string, name: string): AppError {
  return new AppError('WORKSPACE_EXISTS', `${owner} already has a workspace named '${name}'. Choose another name, or delete the old one with \`den delete ${name}\`.`);
}

function isUniqueViolation(error: unknown): boolean {
  const e = error as { code?: string; errcode?: string; message?: string };
  return e?.code === '23505' || /UNIQUE constraint failed/i.test(e?.message ?? '');
}
