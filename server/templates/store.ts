import { randomUUID } from 'node:crypto';
import type { Kysely, Selectable, SelectQueryBuilder } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { TemplateSpec } from '../../protocol/template.ts';
import type {
  PushTemplateResponse, TemplateDetail, TemplateSummary, TemplateVersionDetail, TemplateVersionSummary,
} from '../../protocol/templates-api.ts';
import type { Principal } from '../http/auth-types.ts';
import type { Database, TemplatesTable, TemplateVersionsTable } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import { isUniqueViolation } from '../store/unique.ts';
import { canAccessWorkspace } from '../workspaces/access.ts';
import { templateFilesSpec } from './files.ts';
import { templateSummaries, versionSummaries } from './queries.ts';

/**
 * Templates and their immutable versions in the store. Push validates everything before it
 * writes, and writes in one transaction, so a failed push leaves no partial state.
 */

export interface TemplateRecord {
  id: string;
  name: string;
  displayName: string;
  description: string;
  icon: string | null;
  activeVersionId: string | null;
}

export interface TemplateVersionRecord {
  id: string;
  templateId: string;
  number: number;
  spec: TemplateSpec;
  message: string;
  createdBy: string;
  createdAt: string;
}

export interface PushInput {
  files: Record<string, string>;
  message?: string;
  activate?: boolean;
  userId: string;
  maxBytes: number;
}

/** Stores a new version (creating the template on its first push); numbers go 1, 2, 3... */
export async function pushTemplateVersion(db: Kysely<Database>, clock: Clock, input: PushInput): Promise<PushTemplateResponse> {
  const spec = await templateFilesSpec(input.files, input.maxBytes);
  // Concurrent pushes race for the next number (or for creating the template); the unique
  // constraints decide, and the loser simply tries again with the next number.
  for (let attempt = 1; ; attempt++) {
    try {
      const { created, number, unchanged } = await db.transaction().execute(async (trx) => insertVersion(trx, clock, spec, input));
      const [template] = await templateSummaries(db, spec.name);
      const [version] = await versionSummaries(db, spec.name, number);
      return { template, version, created, unchanged };
    } catch (error) {
      if (attempt >= 10 || !isUniqueViolation(error)) throw error;
    }
  }
}

/** The version with its template, or undefined when no such version exists. */
export async function getTemplateVersionById(
  db: Kysely<Database>,
  id: string,
): Promise<(TemplateVersionRecord & { template: TemplateRecord }) | undefined> {
  const version = await db.selectFrom('template_versions').selectAll().where('id', '=', id).executeTakeFirst();
  if (!version) return undefined;
  const template = await db.selectFrom('templates').selectAll().where('id', '=', version.template_id).executeTakeFirstOrThrow();
  return { ...toVersionRecord(version), template: toTemplateRecord(template) };
}

/** The template and its active version; TEMPLATE_NOT_FOUND / TEMPLATE_NO_ACTIVE_VERSION. */
export async function getActiveVersion(
  db: Kysely<Database>,
  templateName: string,
): Promise<{ template: TemplateRecord; version: TemplateVersionRecord }> {
  const template = await findTemplate(db, templateName);
  if (!template.active_version_id) {
    throw new AppError('TEMPLATE_NO_ACTIVE_VERSION', `Template '${templateName}' has no active version. Run \`den templates activate ${templateName} <version>\`.`);
  }
  const version = await db.selectFrom('template_versions').selectAll().where('id', '=', template.active_version_id).executeTakeFirstOrThrow();
  return { template: toTemplateRecord(template), version: toVersionRecord(version) };
}

/** The name of the template with this id (workspaces keep the id); undefined when there is none. */
export async function templateNameById(db: Kysely<Database>, id: string): Promise<string | undefined> {
  return (await db.selectFrom('templates').select('name').where('id', '=', id).executeTakeFirst())?.name;
}

export async function listTemplates(db: Kysely<Database>): Promise<TemplateSummary[]> {
  return templateSummaries(db);
}

/** A template with its versions, newest first. */
export async function getTemplate(db: Kysely<Database>, name: string): Promise<TemplateDetail> {
  await findTemplate(db, name);
  const [summary] = await templateSummaries(db, name);
  return { ...summary, versionList: await versionSummaries(db, name) };
}

export async function listTemplateVersions(db: Kysely<Database>, name: string): Promise<TemplateVersionSummary[]> {
  await findTemplate(db, name);
  return versionSummaries(db, name);
}

/** A version with its spec and files (what `den templates pull` writes back). */
export async function getTemplateVersion(db: Kysely<Database>, name: string, number: number): Promise<TemplateVersionDetail> {
  const template = await findTemplate(db, name);
  const row = await db.selectFrom('template_versions').selectAll().where('template_id', '=', template.id).where('number', '=', number).executeTakeFirst();
  if (!row) throw versionNotFound(name, number);
  const [summary] = await versionSummaries(db, name, number);
  return { ...summary, id: row.id, spec: JSON.parse(row.spec_json) as TemplateSpec, files: JSON.parse(row.files_json) as Record<string, string> };
}

/** Makes `number` the version new workspaces (and `den update`) use. */
export async function activateTemplateVersion(db: Kysely<Database>, clock: Clock, name: string, number: number): Promise<TemplateSummary> {
  const template = await findTemplate(db, name);
  const row = await db.selectFrom('template_versions').selectAll().where('template_id', '=', template.id).where('number', '=', number).executeTakeFirst();
  if (!row) throw versionNotFound(name, number);
  await db.updateTable('templates').set(activation(row, JSON.parse(row.spec_json) as TemplateSpec, iso(clock.now()))).where('id', '=', template.id).execute();
  const [summary] = await templateSummaries(db, name);
  return summary;
}

/**
 * Deletes a template no live workspace uses; TEMPLATE_IN_USE otherwise. The refusal counts the
 * workspaces and names only those `principal` may see (workspaces/access.ts): a template admin
 * is not otherwise shown other users' workspaces.
 */
export async function deleteTemplate(db: Kysely<Database>, clock: Clock, name: string, principal: Principal): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const template = await findTemplate(trx, name);
    const live = trx.selectFrom('workspaces').where('workspaces.template_id', '=', template.id).where('workspaces.deleted_at', 'is', null);
    const perOwner = await live.select(['owner_id', (eb) => eb.fn.countAll<number | string>().as('n')]).groupBy('owner_id').execute();
    if (perOwner.length > 0) throw await templateInUse(live, name, perOwner, principal);
    // Rows stay (deleted workspaces and builds reference them); the name is freed for reuse.
    await trx
      .updateTable('templates')
      .set({ deleted_at: iso(clock.now()), name: `${template.name}~deleted~${template.id}` })
      .where('id', '=', template.id)
      .execute();
  });
}

async function insertVersion(trx: Kysely<Database>, clock: Clock, spec: TemplateSpec, input: PushInput): Promise<{ created: boolean; number: number; unchanged: boolean }> {
  const now = iso(clock.now());
  let template = await trx.selectFrom('templates').selectAll().where('name', '=', spec.name).where('deleted_at', 'is', null).executeTakeFirst();
  const created = !template;
  if (template?.active_version_id) {
    // The same folder pushed again (a script, a CI job) is the active version, not a new one
    // that would mark every workspace outdated.
    const active = await trx.selectFrom('template_versions').select(['number', 'files_json']).where('id', '=', template.active_version_id).executeTakeFirstOrThrow();
    if (sameFiles(JSON.parse(active.files_json) as Record<string, string>, input.files)) return { created: false, number: active.number, unchanged: true };
  }
  if (!template) {
    template = {
      id: randomUUID(), name: spec.name, display_name: spec.displayName ?? spec.name, description: spec.description ?? '',
      icon: spec.icon ?? null, active_version_id: null, created_by: input.userId, created_at: now, updated_at: now, deleted_at: null,
    };
    await trx.insertInto('templates').values(template).execute();
  }
  const last = await trx.selectFrom('template_versions').select((eb) => eb.fn.max('number').as('max')).where('template_id', '=', template.id).executeTakeFirst();
  const number = Number(last?.max ?? 0) + 1;
  const version = {
    id: randomUUID(), template_id: template.id, number, spec_json: JSON.stringify(spec), files_json: JSON.stringify(input.files),
    message: input.message ?? '', created_by: input.userId, created_at: now,
  };
  await trx.insertInto('template_versions').values(version).execute();
  const activate = input.activate ?? template.active_version_id === null;
  await trx
    .updateTable('templates')
    .set(activate ? activation(version, spec, now) : { updated_at: now })
    .where('id', '=', template.id)
    .execute();
  return { created, number, unchanged: false };
}

function sameFiles(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => Object.hasOwn(b, key) && a[key] === b[key]);
}

/** The active version decides what the template shows as its name, description and icon. */
function activation(version: { id: string }, spec: TemplateSpec, now: string) {
  return {
    active_version_id: version.id,
    display_name: spec.displayName ?? spec.name,
    description: spec.description ?? '',
    icon: spec.icon ?? null,
    updated_at: now,
  };
}

async function findTemplate(db: Kysely<Database>, name: string): Promise<Selectable<TemplatesTable>> {
  const template = await db.selectFrom('templates').selectAll().where('name', '=', name).where('deleted_at', 'is', null).executeTakeFirst();
  if (!template) throw new AppError('TEMPLATE_NOT_FOUND', `There is no template '${name}'. Run \`den templates list\` to see the templates.`);
  return template;
}

const NAMED_IN_USE = 5;

async function templateInUse(
  live: SelectQueryBuilder<Database, 'workspaces', object>,
  name: string,
  perOwner: { owner_id: string; n: number | string }[],
  principal: Principal,
): Promise<AppError> {
  const visibleOwners = perOwner.filter((row) => canAccessWorkspace(principal, row.owner_id)).map((row) => row.owner_id);
  const count = (rows: typeof perOwner) => rows.reduce((sum, row) => sum + Number(row.n), 0);
  const total = count(perOwner);
  const visible = count(perOwner.filter((row) => visibleOwners.includes(row.owner_id)));
  const named = visibleOwners.length === 0 ? [] : await live
    .innerJoin('users', 'users.id', 'workspaces.owner_id')
    .select(['workspaces.name', 'users.username'])
    .where('workspaces.owner_id', 'in', visibleOwners)
    // created in the same millisecond (a script, a test), the names still come in one order
    .orderBy('workspaces.created_at').orderBy('users.username').orderBy('workspaces.name')
    .limit(NAMED_IN_USE)
    .execute();
  const parts = [];
  if (named.length > 0) parts.push(`${named.map((w) => `${w.username}/${w.name}`).join(', ')}${visible > named.length ? ` and ${visible - named.length} more` : ''}`);
  if (total > visible) parts.push(`${total - visible} of other users`);
  const workspaces = total === 1 ? '1 live workspace' : `${total} live workspaces`;
  const next = total === visible
    ? 'Delete them (`den delete`) first.'
    : visible > 0
      ? 'Delete yours (`den delete`) and ask the other users (or a den owner) to delete theirs, then try again.'
      : 'Ask their owners (or a den owner) to delete them, then try again.';
  return new AppError('TEMPLATE_IN_USE', `Template '${name}' is still used by ${workspaces} (${parts.join('; ')}). ${next}`);
}

function versionNotFound(name: string, number: number): AppError {
  return new AppError('TEMPLATE_VERSION_NOT_FOUND', `Template '${name}' has no version ${number}. Run \`den templates versions ${name}\` to see its versions.`);
}

function toTemplateRecord(row: Selectable<TemplatesTable>): TemplateRecord {
  return { id: row.id, name: row.name, displayName: row.display_name, description: row.description, icon: row.icon, activeVersionId: row.active_version_id };
}

function toVersionRecord(row: Selectable<TemplateVersionsTable>): TemplateVersionRecord {
  return {
    id: row.id, templateId: row.template_id, number: row.number, spec: JSON.parse(row.spec_json) as TemplateSpec,
    message: row.message, createdBy: row.created_by, createdAt: row.created_at,
  };
}

