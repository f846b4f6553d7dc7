import { randomUUID } from 'node:crypto';
import { type ExpressionBuilder, type Kysely, type Selectable, sql } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { BuildState, BuildsTable, BuildTransition, Database } from '../store/schema.ts';
import { iso } from '../store/time.ts';
import { isUniqueViolation } from '../store/unique.ts';
import { buildInProgress, latestBuildOf, linkLatestBuild } from '../workspaces/lifecycle.ts';

export type BuildRow = Selectable<BuildsTable>;

export interface BuildStep {
  name: string;
  startedAt: string;
  finishedAt?: string;
  durationMs?: number;
  state: 'running' | 'succeeded' | 'failed';
}

export interface EnqueueRequest {
  workspaceId: string;
  transition: BuildTransition;
  reason: string;
  initiatorId: string;
  templateVersionId: string;
  /** the parameter values this build uses (ephemeral ones included) */
  params: Record<string, unknown>;
  now: Date;
}

const ACTIVE: BuildState[] = ['queued', 'running'];

/**
 * Queues a build. Call inside the transaction that made the request's other changes. Race-safe:
 * the workspace's `last_build_id` is swapped with a compare-and-set, so of two concurrent
 * requests exactly one wins and the other gets BUILD_IN_PROGRESS, on SQLite and PostgreSQL.
 */
export async function enqueueBuild(trx: Kysely<Database>, request: EnqueueRequest): Promise<BuildRow> {
  const latest = await latestBuildOf(trx, request.workspaceId);
  if (latest.state && ACTIVE.includes(latest.state)) throw buildInProgress(latest.transition!);
  const now = iso(request.now);
  const build: BuildRow = {
    id: randomUUID(),
    workspace_id: request.workspaceId,
    number: (latest.number ?? 0) + 1,
    transition: request.transition,
    reason: request.reason,
    initiator_id: request.initiatorId,
    template_version_id: request.templateVersionId,
    params_json: JSON.stringify(request.params),
    state: 'queued',
    error: null,
    steps_json: '[]',
    lease_owner: null,
    lease_expires_at: null,
    attempts: 0,
    created_at: now,
    started_at: null,
    finished_at: null,
    cancel_requested_by: null,
    cancel_requested_at: null,
  };
  try {
    await trx.insertInto('builds').values(build).execute();
  } catch (error) {
    // A concurrent request took the same build number first (the unique (workspace, number) index).
    if (isUniqueViolation(error)) throw buildInProgress(request.transition);
    throw error;
  }
  if (!await linkLatestBuild(trx, request.workspaceId, latest.id, build.id, request.now)) throw buildInProgress(request.transition);
  return build;
}

/** Takes the oldest build that is queued or whose lease expired (its worker died). */
export async function claimBuild(db: Kysely<Database>, owner: string, now: Date, leaseMs: number): Promise<BuildRow | undefined> {
  const nowIso = iso(now);
  const claimable = (eb: ExpressionBuilder<Database, 'builds'>) =>
    eb.or([eb('state', '=', 'queued'), eb.and([eb('state', '=', 'running'), eb('lease_expires_at', '<', nowIso)])]);
  const candidates = await db.selectFrom('builds').select('id').where(claimable).orderBy('created_at').limit(8).execute();
  for (const { id } of candidates) {
    const result = await db
      .updateTable('builds')
      .set({
        state: 'running',
        lease_owner: owner,
        lease_expires_at: iso(new Date(now.getTime() + leaseMs)),
        attempts: sql<number>`attempts + 1`,
        started_at: sql<string>`coalesce(started_at, ${nowIso})`,
      })
      .where('id', '=', id)
      .where(claimable)
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) === 1) {
      return db.selectFrom('builds').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
    }
  }
  return undefined;
}

/** Extends the lease; false when another worker took the build over (this one must stop). */
export async function renewLease(db: Kysely<Database>, buildId: string, owner: string, until: Date): Promise<boolean> {
  const result = await db
    .updateTable('builds')
    .set({ lease_expires_at: iso(until) })
    .where('id', '=', buildId)
    .where('lease_owner', '=', owner)
    .where('state', '=', 'running')
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

export async function saveSteps(db: Kysely<Database>, buildId: string, owner: string, steps: BuildStep[]): Promise<void> {
  await db.updateTable('builds').set({ steps_json: JSON.stringify(steps) })
    .where('id', '=', buildId).where('lease_owner', '=', owner).execute();
}

export async function finishBuild(
  db: Kysely<Database>,
  buildId: string,
  owner: string,
  outcome: { state: 'succeeded' | 'failed' | 'canceled'; error: string | null; steps: BuildStep[]; now: Date },
): Promise<boolean> {
  const result = await db
    .updateTable('builds')
    .set({
      state: outcome.state,
      error: outcome.error,
      steps_json: JSON.stringify(outcome.steps),
      finished_at: iso(outcome.now),
      lease_owner: null,
      lease_expires_at: null,
    })
    .where('id', '=', buildId)
    .where('lease_owner', '=', owner)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** Hands a build back to the queue (graceful shutdown): the next worker resumes it at once. */
export async function requeueBuild(db: Kysely<Database>, buildId: string, owner: string): Promise<void> {
  await db
    .updateTable('builds')
    .set({ state: 'queued', lease_owner: null, lease_expires_at: null, attempts: sql<number>`attempts - 1` })
    .where('id', '=', buildId)
    .where('lease_owner', '=', owner)
    .where('state', '=', 'running')
    .execute();
}

/**
 * Cancels a build in the caller's transaction: a queued build ends canceled here (no worker
 * took it, so none will); a running one gets the request recorded, and the worker holding it
 * ends it (`cancelRequestOf` on lease renewal, or `BuildService.abort` in the same process).
 * A build claimed between the caller's read and this write is treated as running.
 */
export async function requestBuildCancel(
  trx: Kysely<Database>,
  buildId: string,
  user: { id: string; username: string },
  now: Date,
): Promise<'canceled' | 'requested'> {
  const at = iso(now);
  const userId = user.id;
  const dropped = await trx.updateTable('builds')
    .set({ state: 'canceled', error: queuedCancelSentence(user.username), finished_at: at, cancel_requested_by: userId, cancel_requested_at: at })
    .where('id', '=', buildId).where('state', '=', 'queued')
    .executeTakeFirst();
  if (Number(dropped.numUpdatedRows) === 1) return 'canceled';
  await trx.updateTable('builds')
    .set({ cancel_requested_by: userId, cancel_requested_at: at })
    .where('id', '=', buildId).where('state', '=', 'running').where('cancel_requested_by', 'is', null)
    .execute();
  return 'requested';
}

/** The user who asked to cancel the build, if anyone did. */
export async function cancelRequestOf(db: Kysely<Database>, buildId: string): Promise<string | null> {
  const row = await db.selectFrom('builds').select('cancel_requested_by').where('id', '=', buildId).executeTakeFirst();
  return row?.cancel_requested_by ?? null;
}

/** The build log line and error of a build canceled before any worker took it. */
export function queuedCancelSentence(username: string): string {
  return `Canceled by ${username} before it started.`;
}
