import { randomUUID } from 'node:crypto';
import { AppError } from '../../protocol/errors.ts';
import type { TemplateSpec } from '../../protocol/template.ts';
import {
  WORKSPACE_NAME, WORKSPACE_NAME_MAX, type BuildDto, type WorkspaceDto,
} from '../../protocol/workspaces.ts';
import type { EventPublisher } from '../events/bus.ts';
import type { DenBase } from '../base.ts';
import type { BuildService } from '../builds/service.ts';
import { assertCapabilities } from '../runtimes/capabilities.ts';
import type { Principal } from '../http/auth-types.ts';
import type { Database } from '../store/schema.ts';
import { iso } from '../store/time.ts';
import { isUniqueViolation } from '../store/unique.ts';
import { resolveParameters, withoutEphemeral } from '../templates/parameters.ts';
import { getActiveVersion, getTemplateVersionById, templateNameById } from '../templates/store.ts';
import { findUserByUsername } from '../users/users.ts';
import type { Kysely } from 'kysely';
import { queuedCancelSentence, requestBuildCancel, type BuildRow, type EnqueueRequest } from '../builds/queue.ts';
import type { WorkspaceRow } from './access.ts';
import { announceStatus, checkRequestIn, dropQueuedBuildStatus, INITIAL_STATUS } from './lifecycle.ts';
import { getBuildById, getWorkspaceDto } from './queries.ts';

/** What the workspace lifecycle requests need: the store and clock, the driver's capabilities, the build queue. */
export interface WorkspaceServiceDeps extends Pick<DenBase, 'store' | 'clock' | 'driver'> {
  builds: Pick<BuildService, 'enqueue' | 'wake' | 'abort' | 'logs' | 'announce'>;
  /** where a canceled queued build's end and the status it leaves are announced */
  events: EventPublisher;
}

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
export async function createWorkspace(den: WorkspaceServiceDeps, principal: Principal, input: CreateWorkspaceInput): Promise<{ workspace: WorkspaceDto; build: BuildDto }> {
  checkWorkspaceName(input.name);
  const { db } = den.store;
  const owner = await resolveOwner(db, principal, input.owner);
  const { templateId, versionId, spec } = await activeVersion(db, input.template);
  const params = resolveParameters(spec, input.params);
  assertCapabilities(den.driver, spec);
  const now = den.clock.now();
  const workspaceId = randomUUID();
  let build: BuildRow;
  try {
    build = await db.transaction().execute(async (trx) => {
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
        status: INITIAL_STATUS,
        last_build_id: null,
        created_at: iso(now),
        updated_at: iso(now),
        deleted_at: null,
      }).execute();
      return den.builds.enqueue({
        workspaceId, transition: 'start', reason: 'create', initiatorId: principal.userId,
        templateVersionId: versionId, params, now,
      }, trx);
    });
  } catch (error) {
    // Two creates racing past the check above meet the unique index instead.
    if (isUniqueViolation(error)) throw workspaceExists(owner.username, input.name);
    throw error;
  }
  den.builds.wake(build);
  return { workspace: await getWorkspaceDto(db, workspaceId), build: await getBuildById(db, build.id) };
}

/**
 * Queues the build for a transition. The workspace's status and newest build are checked in the
 * transaction that queues the build (workspaces/lifecycle.ts), so two requests racing cannot
 * both pass. Returns the (first) build; restart chains stop -> start.
 */
export async function requestTransition(
  den: WorkspaceServiceDeps,
  principal: Principal,
  workspace: WorkspaceRow & { owner_name: string },
  request: TransitionRequest,
): Promise<{ workspace: WorkspaceDto; build: BuildDto }> {
  const { db } = den.store;
  const now = den.clock.now();
  const previous = JSON.parse(workspace.params_json) as Record<string, unknown>;
  const base = { workspaceId: workspace.id, initiatorId: principal.userId, now };
  const label = `${workspace.owner_name}/${workspace.name}`;
  // What the build will run with, resolved before the transaction: a bad parameter fails the
  // request instead of the build later.
  let queue: EnqueueRequest;
  let updated: { versionId: string; paramsJson: string } | undefined;
  switch (request.kind) {
    case 'start':
    case 'restart': {
      const spec = await versionSpec(db, workspace.template_version_id);
      const params = resolveParameters(spec, request.params, previous);
      queue = request.kind === 'start'
        ? { ...base, transition: 'start', reason: 'start', templateVersionId: workspace.template_version_id, params }
        : { ...base, transition: 'stop', reason: 'restart', templateVersionId: workspace.template_version_id, params };
      break;
    }
    case 'stop':
    case 'delete':
      queue = { ...base, transition: request.kind, reason: request.kind, templateVersionId: workspace.template_version_id, params: previous };
      break;
    case 'update': {
      const templateName = await templateNameById(db, workspace.template_id);
      if (!templateName) throw new AppError('TEMPLATE_NOT_FOUND', `The template of workspace '${label}' no longer exists, so there is no version to update it to. Delete it with \`den delete ${workspace.name}\`.`);
      const { versionId, spec } = await activeVersion(db, templateName);
      const params = resolveParameters(spec, request.params, previous);
      queue = { ...base, transition: 'start', reason: 'update', templateVersionId: versionId, params };
      updated = { versionId, paramsJson: JSON.stringify(withoutEphemeral(spec, params)) };
      break;
    }
  }
  const build = await db.transaction().execute(async (trx) => {
    await checkRequestIn(trx, workspace.id, label, request.kind);
    const build = await den.builds.enqueue(queue, trx);
    if (updated) {
      await trx.updateTable('workspaces')
        .set({ template_version_id: updated.versionId, params_json: updated.paramsJson, updated_at: iso(now) })
        .where('id', '=', workspace.id)
        .execute();
    }
    return build;
  });
  den.builds.wake(build);
  return { workspace: await getWorkspaceDto(db, workspace.id), build: await getBuildById(db, build.id) };
}

/**
 * Cancels the workspace's queued or running build. A queued one ends canceled at once, without
 * running; a running one is asked to stop: its worker aborts it (through the drivers'
 * AbortSignal) and ends it canceled, leaving the workspace `failed` (lifecycle.ts). Returns the
 * build as it is now; `den cancel --wait` follows it to its end.
 */
export async function cancelBuild(
  den: WorkspaceServiceDeps,
  principal: Principal,
  workspace: WorkspaceRow & { owner_name: string },
): Promise<{ workspace: WorkspaceDto; build: BuildDto }> {
  const { db } = den.store;
  const now = den.clock.now();
  const label = `${workspace.owner_name}/${workspace.name}`;
  const outcome = await db.transaction().execute(async (trx) => {
    const { buildId } = await checkRequestIn(trx, workspace.id, label, 'cancel');
    const result = await requestBuildCancel(trx, buildId!, { id: principal.userId, username: principal.username }, now);
    const status = result === 'canceled' ? await dropQueuedBuildStatus(trx, workspace.id, now) : undefined;
    return { buildId: buildId!, result, status };
  });
  if (outcome.result === 'canceled') {
    den.builds.logs.append(outcome.buildId, { stream: 'system', line: queuedCancelSentence(principal.username) });
    await den.builds.logs.flush();
    den.builds.logs.notify(outcome.buildId);
  } else {
    den.builds.abort(outcome.buildId, principal.userId);
  }
  const build = await getBuildById(db, outcome.buildId);
  if (outcome.result === 'canceled') {
    den.builds.announce({ id: build.id, workspace_id: workspace.id, number: build.number, transition: build.transition }, 'canceled');
    if (outcome.status) announceStatus(den.events, workspace.id, outcome.status, now);
  }
  return { workspace: await getWorkspaceDto(db, workspace.id), build };
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
  const user = await findUserByUsername(db, ownerName);
  if (!user) throw new AppError('USER_NOT_FOUND', `There is no user '${ownerName}'. Run \`den users list\` to see the users.`);
  return { id: user.id, username: user.username };
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

