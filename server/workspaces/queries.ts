import { MAIN_AGENT } from '../../protocol/agent.ts';
import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { BuildDto, WorkspaceDto } from '../../protocol/workspaces.ts';
import type { BuildRow } from '../builds/service.ts';
import { compiledOnce } from '../store/compiled-once.ts';
import type { Database } from '../store/schema.ts';

/** The one query behind list and show: owner, template and latest build joined in, no N+1. */
function workspaceQuery(db: Kysely<Database>) {
  return db
    .selectFrom('workspaces as w')
    .innerJoin('users as u', 'u.id', 'w.owner_id')
    .innerJoin('templates as t', 't.id', 'w.template_id')
    .innerJoin('template_versions as v', 'v.id', 'w.template_version_id')
    .leftJoin('builds as b', 'b.id', 'w.last_build_id')
    // the list shows the workspace's main agent; `show` lists every agent (listAgents)
    .leftJoin('agents as a', (join) => join.onRef('a.workspace_id', '=', 'w.id').on('a.name', '=', MAIN_AGENT))
    .select([
      'w.id', 'w.name', 'w.params_json', 'w.status', 'a.state as agent_state', 'w.health', 'w.health_message', 'w.health_at', 'w.last_activity_at', 'w.created_at', 'w.updated_at',
      'w.template_version_id', 'u.username as owner_name', 't.name as template_name', 't.active_version_id',
      'v.number as version_number',
      'b.id as build_id', 'b.number as build_number', 'b.transition as build_transition', 'b.state as build_state',
      'b.error as build_error', 'b.created_at as build_created_at', 'b.finished_at as build_finished_at',
    ])
    .where('w.deleted_at', 'is', null);
}

type WorkspaceListRow = Awaited<ReturnType<ReturnType<typeof workspaceQuery>['executeTakeFirstOrThrow']>>;

export interface ListFilter {
  /** only this owner's workspaces; undefined = everyone's */
  ownerId?: string;
  limit: number;
  offset: number;
}

export async function listWorkspaces(db: Kysely<Database>, filter: ListFilter): Promise<{ workspaces: WorkspaceDto[]; total: number }> {
  const { rows } = await db.executeQuery(
    filter.ownerId === undefined
      ? listEveryonesPage(db, filter.limit, filter.offset)
      : listOwnersPage(db, filter.ownerId, filter.limit, filter.offset),
  );
  // The page carries the total (one statement, one snapshot); past the last page there is no
  // row to carry it, so only then is it counted on its own.
  const total = rows.length > 0 ? Number(rows[0].total) : filter.offset === 0 ? 0 : await countWorkspaces(db, filter.ownerId);
  return { workspaces: rows.map(toWorkspaceDto), total };
}

export async function getWorkspaceDto(db: Kysely<Database>, workspaceId: string): Promise<WorkspaceDto> {
  const row = (await db.executeQuery(workspaceById(db, workspaceId))).rows[0];
  if (!row) throw new AppError('WORKSPACE_NOT_FOUND', 'The workspace no longer exists. Run `den list` to see your workspaces.');
  return toWorkspaceDto(row);
}

// The list and show queries are compiled once per database handle (see compiledOnce). The page
// carries the total as an uncorrelated scalar subquery, which SQLite and PostgreSQL both
// evaluate once per statement (one round trip instead of two).
const listOwnersPage = compiledOnce(
  (db, ownerId: string, limit: number, offset: number) =>
    workspaceQuery(db)
      .select((eb) =>
        eb.selectFrom('workspaces as c').select(eb.fn.countAll<number | string>().as('n'))
          .where('c.deleted_at', 'is', null).where('c.owner_id', '=', ownerId).as('total'))
      .where('w.owner_id', '=', ownerId)
      .orderBy('w.created_at').orderBy('w.id').limit(limit).offset(offset),
  ['\u0000owner', -1_000_001, -1_000_002],
);

const listEveryonesPage = compiledOnce(
  (db, limit: number, offset: number) =>
    workspaceQuery(db)
      .select((eb) =>
        eb.selectFrom('workspaces as c').select(eb.fn.countAll<number | string>().as('n'))
          .where('c.deleted_at', 'is', null).as('total'))
      .orderBy('w.created_at').orderBy('w.id').limit(limit).offset(offset),
  [-1_000_001, -1_000_002],
);

const workspaceById = compiledOnce((db, id: string) => workspaceQuery(db).where('w.id', '=', id), ['\u0000id']);

async function countWorkspaces(db: Kysely<Database>, ownerId: string | undefined): Promise<number> {
  let count = db.selectFrom('workspaces').select((eb) => eb.fn.countAll<number | string>().as('total')).where('deleted_at', 'is', null);
  if (ownerId !== undefined) count = count.where('owner_id', '=', ownerId);
  return Number((await count.executeTakeFirstOrThrow()).total);
}

export async function listBuilds(db: Kysely<Database>, workspaceId: string, limit = 50): Promise<BuildDto[]> {
  const rows = await buildQuery(db).where('b.workspace_id', '=', workspaceId).orderBy('b.number', 'desc').limit(limit).execute();
  return rows.map(toBuildDto);
}

export async function getBuildByNumber(db: Kysely<Database>, workspaceId: string, number: number): Promise<BuildDto> {
  const row = await buildQuery(db).where('b.workspace_id', '=', workspaceId).where('b.number', '=', number).executeTakeFirst();
  if (!row) {
    throw new AppError('BUILD_NOT_FOUND', `The workspace has no build #${number}. Run \`den show\` to see its latest build.`);
  }
  return toBuildDto(row);
}

export async function getBuildById(db: Kysely<Database>, buildId: string): Promise<BuildDto> {
  return toBuildDto(await buildQuery(db).where('b.id', '=', buildId).executeTakeFirstOrThrow());
}

function buildQuery(db: Kysely<Database>) {
  return db.selectFrom('builds as b').leftJoin('users as u', 'u.id', 'b.initiator_id').selectAll('b').select('u.username as initiator_name');
}

export function toBuildDto(row: BuildRow & { initiator_name?: string | null }): BuildDto {
  return {
    id: row.id,
    number: row.number,
    workspaceId: row.workspace_id,
    transition: row.transition,
    reason: row.reason,
    initiator: row.initiator_name ?? null,
    state: row.state,
    error: row.error,
    steps: JSON.parse(row.steps_json),
    templateVersionId: row.template_version_id,
    attempts: row.attempts,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
  };
}

function toWorkspaceDto(row: WorkspaceListRow): WorkspaceDto {
  return {
    id: row.id,
    name: row.name,
    owner: row.owner_name,
    template: row.template_name,
    templateVersion: row.version_number,
    templateVersionId: row.template_version_id,
    outdated: row.active_version_id !== null && row.active_version_id !== row.template_version_id,
    params: JSON.parse(row.params_json),
    status: row.status,
    agentState: row.agent_state ?? null,
    health: row.health ? { state: row.health, message: row.health_message ?? '', at: row.health_at ?? row.updated_at } : null,
    latestBuild: row.build_id
      ? {
        id: row.build_id,
        number: row.build_number!,
        transition: row.build_transition!,
        state: row.build_state!,
        error: row.build_error ?? null,
        createdAt: row.build_created_at!,
        finishedAt: row.build_finished_at ?? null,
      }
      : null,
    lastActivityAt: row.last_activity_at,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}
