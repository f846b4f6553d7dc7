import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { BuildState, BuildTransition, Database, WorkspaceStatus } from '../store/schema.ts';
import { iso } from '../store/time.ts';
import type { EventPublisher } from '../events/bus.ts';

/**
 * The workspace lifecycle: what a user may ask of a workspace in each status, and the only
 * writer of `workspaces.status`. Requests (create, start, stop, restart, update, delete,
 * cancel) are checked here inside the transaction that queues (or cancels) their build; builds
 * then move the workspace through the statuses of their transition with `enterStatus`.
 */

export type LifecycleRequest = 'start' | 'stop' | 'restart' | 'update' | 'delete' | 'cancel';

/** What a new workspace row starts as: its first build is queued with it. */
export const INITIAL_STATUS: WorkspaceStatus = 'pending';

/** The status a build leaves the workspace in when it fails or is canceled while running. */
export const INTERRUPTED_STATUS: WorkspaceStatus = 'failed';

/**
 * The status each transition moves the workspace through while its build runs, and where it
 * ends when the build succeeds.
 */
const BUILD_STATUSES: Record<BuildTransition, { during: WorkspaceStatus; after: WorkspaceStatus }> = {
  start: { during: 'starting', after: 'running' },
  stop: { during: 'stopping', after: 'stopped' },
  delete: { during: 'deleting', after: 'deleted' },
};

const ACTIVE_BUILD: BuildState[] = ['queued', 'running'];

export interface LifecycleSubject {
  /** owner/name, for the sentences */
  label: string;
  name: string;
  status: WorkspaceStatus;
  /** 'down' when the reconciler saw its agent, container or a service die after the build */
  health?: 'ok' | 'down' | null;
  /** the state of the workspace's newest build, if it has one */
  buildState: BuildState | null;
  buildTransition: BuildTransition | null;
}

/**
 * Refuses a request the workspace cannot take in its current status, with a coded error and a
 * sentence saying what to do instead. Pure, so the whole table is unit-tested.
 */
export function checkRequest(subject: LifecycleSubject, request: LifecycleRequest): void {
  const building = subject.buildState !== null && ACTIVE_BUILD.includes(subject.buildState);
  if (request === 'cancel') {
    if (!building) {
      throw new AppError('BUILD_NOT_IN_PROGRESS',
        `Workspace '${subject.label}' has no queued or running build to cancel (it is ${subject.status}). \`den show ${subject.name}\` shows its latest build.`);
    }
    return;
  }
  if (building) throw buildInProgress(subject.buildTransition ?? 'start');
  // a running workspace the reconciler saw die may be started again: that is how it recovers
  if (request === 'start' && subject.status === 'running' && subject.health !== 'down') {
    throw new AppError('WORKSPACE_ALREADY_IN_STATE', `Workspace '${subject.name}' is already running. Use \`den restart\` to start it afresh.`);
  }
  if (request === 'stop' && subject.status === 'stopped') {
    throw new AppError('WORKSPACE_ALREADY_IN_STATE', `Workspace '${subject.name}' is already stopped. Use \`den start\` to start it.`);
  }
}

/** Reads the workspace's status and newest build inside `trx` and checks the request against them. */
export async function checkRequestIn(trx: Kysely<Database>, workspaceId: string, label: string, request: LifecycleRequest): Promise<LifecycleSubject & { buildId: string | null }> {
  const row = await trx.selectFrom('workspaces').select(['name', 'status', 'health']).where('id', '=', workspaceId).executeTakeFirst();
  if (!row) throw new AppError('WORKSPACE_NOT_FOUND', `There is no workspace '${label}'. Run \`den list\` to see your workspaces.`);
  const latest = await latestBuildOf(trx, workspaceId);
  const subject = { label, name: row.name, status: row.status, health: row.health, buildState: latest.state, buildTransition: latest.transition, buildId: latest.id };
  checkRequest(subject, request);
  return subject;
}

/** The workspace's newest build (all null before its first): what the next build follows. */
export async function latestBuildOf(trx: Kysely<Database>, workspaceId: string): Promise<{
  id: string | null; state: BuildState | null; transition: BuildTransition | null; number: number | null;
}> {
  const row = await trx
    .selectFrom('workspaces')
    .leftJoin('builds', 'builds.id', 'workspaces.last_build_id')
    .select(['workspaces.last_build_id', 'builds.state', 'builds.transition', 'builds.number'])
    .where('workspaces.id', '=', workspaceId)
    .executeTakeFirstOrThrow();
  return { id: row.last_build_id, state: row.state, transition: row.transition, number: row.number };
}

/**
 * Makes `buildId` the workspace's newest build, if its newest is still `expected`: a
 * compare-and-set, so of two requests racing to queue a build exactly one wins, on SQLite and
 * PostgreSQL. False when another request won.
 */
export async function linkLatestBuild(trx: Kysely<Database>, workspaceId: string, expected: string | null, buildId: string, now: Date): Promise<boolean> {
  const swapped = await trx
    .updateTable('workspaces')
    .set({ last_build_id: buildId, updated_at: iso(now) })
    .where('id', '=', workspaceId)
    .where('last_build_id', expected === null ? 'is' : '=', expected)
    .executeTakeFirst();
  return Number(swapped.numUpdatedRows) === 1;
}

/** A build of `transition` began its work: the workspace shows it (starting, stopping, deleting). */
export function enterBuildStatus(db: Kysely<Database>, events: EventPublisher, workspaceId: string, transition: BuildTransition, now: Date): Promise<void> {
  return writeStatus(db, events, workspaceId, BUILD_STATUSES[transition].during, now);
}

/** A build of `transition` did all its work: the workspace is running, stopped or deleted. */
export function completeBuildStatus(db: Kysely<Database>, events: EventPublisher, workspaceId: string, transition: BuildTransition, now: Date): Promise<void> {
  return writeStatus(db, events, workspaceId, BUILD_STATUSES[transition].after, now);
}

/**
 * A build stopped part-way (it failed, or was canceled while running): what it left behind is
 * unknown, so the workspace is `failed`, from which start, stop and delete are all accepted.
 */
export function interruptBuildStatus(db: Kysely<Database>, events: EventPublisher, workspaceId: string, now: Date): Promise<void> {
  return writeStatus(db, events, workspaceId, INTERRUPTED_STATUS, now);
}

/**
 * A build was canceled before any worker took it, so nothing of it happened and the workspace
 * keeps its status, except a new workspace whose first build never ran: it has nothing in the
 * runtime, which is what `stopped` says.
 */
export async function dropQueuedBuildStatus(trx: Kysely<Database>, workspaceId: string, now: Date): Promise<WorkspaceStatus | undefined> {
  const result = await trx.updateTable('workspaces').set({ status: 'stopped', updated_at: iso(now) })
    .where('id', '=', workspaceId).where('status', '=', INITIAL_STATUS).executeTakeFirst();
  return Number(result.numUpdatedRows) === 1 ? 'stopped' : undefined;
}

export function buildInProgress(transition: string): AppError {
  return new AppError('BUILD_IN_PROGRESS',
    `A ${transition} build is already queued or running for this workspace. Wait for it to finish (\`den logs -f\`) or cancel it (\`den cancel\`), and try again.`);
}

/** Every status a build moves a workspace to is written here, and announced once it is committed. */
async function writeStatus(db: Kysely<Database>, events: EventPublisher, workspaceId: string, status: WorkspaceStatus, now: Date): Promise<void> {
  await db
    .updateTable('workspaces')
    .set({
      status,
      updated_at: iso(now),
      ...(status === 'deleted' ? { deleted_at: iso(now) } : {}),
      // a stopped workspace has nothing left to show down: its next start begins afresh
      ...(status === 'stopped' || status === 'deleted' ? { health: null, health_message: null, health_at: null } : {}),
    })
    .where('id', '=', workspaceId)
    .execute();
  announceStatus(events, workspaceId, status, now);
}

/** Tells the event stream a workspace's new status; for a write inside a transaction, call it after the commit. */
export function announceStatus(events: EventPublisher, workspaceId: string, status: WorkspaceStatus, now: Date): void {
  events.publish({ type: 'workspace.status', workspaceId, at: iso(now), status });
}
