import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { TemplateSpec } from '../../protocol/template-fields.ts';
import type { Database } from '../store/schema.ts';

/** The port of the app `name` that a workspace's template version declares; 404 APP_NOT_FOUND otherwise. */
export async function appPort(db: Kysely<Database>, templateVersionId: string, name: string): Promise<number> {
  const row = await db.selectFrom('template_versions').select('spec_json').where('id', '=', templateVersionId).executeTakeFirst();
  const spec = row ? (JSON.parse(row.spec_json) as Partial<TemplateSpec>) : undefined;
  const app = spec?.workspace?.apps?.find((candidate) => candidate.name === name);
  if (!app) {
    throw new AppError('APP_NOT_FOUND', `This workspace has no app '${name}'. Run \`den show\` to see its apps, or open a port by number at /@owner/workspace/ports/PORT/.`);
  }
  return app.port;
}
