import type { Kysely } from 'kysely';
import type { TemplateSummary, TemplateVersionSummary } from '../../protocol/templates-api.ts';
import type { Database } from '../store/schema.ts';

/**
 * Row -> DTO for templates and versions, in one place. Counts are subqueries so one round trip
 * lists everything (the dashboard lists templates on every visit).
 */

/** Summaries of live templates, optionally only the one named `name`. */
export async function templateSummaries(db: Kysely<Database>, name?: string): Promise<TemplateSummary[]> {
  let query = db
    .selectFrom('templates as t')
    .leftJoin('template_versions as av', 'av.id', 't.active_version_id')
    .leftJoin('users as u', 'u.id', 't.created_by')
    .select((eb) => [
      't.name', 't.display_name', 't.description', 't.icon', 't.created_at', 't.updated_at',
      'av.number as active_number',
      'u.username as creator',
      eb.selectFrom('template_versions as v').select(eb.fn.countAll().as('n')).whereRef('v.template_id', '=', 't.id').as('version_count'),
      eb
        .selectFrom('workspaces as w')
        .select(eb.fn.countAll().as('n'))
        .whereRef('w.template_id', '=', 't.id')
        .where('w.deleted_at', 'is', null)
        .as('workspace_count'),
    ])
    .where('t.deleted_at', 'is', null)
    .orderBy('t.name');
  if (name !== undefined) query = query.where('t.name', '=', name);
  const rows = await query.execute();
  return rows.map((row) => ({
    name: row.name,
    displayName: row.display_name,
    description: row.description,
    icon: row.icon,
    activeVersion: row.active_number ?? null,
    versions: Number(row.version_count ?? 0),
    workspaces: Number(row.workspace_count ?? 0),
    createdBy: row.creator ?? null,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  }));
}

/** Version summaries of a live template, newest first; optionally only version `number`. */
export async function versionSummaries(db: Kysely<Database>, templateName: string, number?: number): Promise<TemplateVersionSummary[]> {
  let query = db
    .selectFrom('template_versions as v')
    .innerJoin('templates as t', 't.id', 'v.template_id')
    .leftJoin('users as u', 'u.id', 'v.created_by')
    .select((eb) => [
      'v.id', 'v.number', 'v.message', 'v.created_at', 't.active_version_id',
      'u.username as creator',
      eb
        .selectFrom('workspaces as w')
        .select(eb.fn.countAll().as('n'))
        .whereRef('w.template_version_id', '=', 'v.id')
        .where('w.deleted_at', 'is', null)
        .as('workspace_count'),
    ])
    .where('t.name', '=', templateName)
    .where('t.deleted_at', 'is', null)
    .orderBy('v.number', 'desc');
  if (number !== undefined) query = query.where('v.number', '=', number);
  const rows = await query.execute();
  return rows.map((row) => ({
    template: templateName,
    number: row.number,
    message: row.message,
    active: row.active_version_id === row.id,
    workspaces: Number(row.workspace_count ?? 0),
    createdBy: row.creator ?? null,
    createdAt: row.created_at,
  }));
}
