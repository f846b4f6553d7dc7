import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { TemplateSpec } from '../../protocol/template-fields.ts';
import type { Database } from '../store/schema.ts';
import { appOrigin } from './subdomain.ts';

type TemplateApp = NonNullable<TemplateSpec['workspace']['apps']>[number];

/** The apps a workspace's template version declares (`workspace.apps`). */
export async function templateApps(db: Kysely<Database>, templateVersionId: string): Promise<TemplateApp[]> {
  return (await workspaceSpec(db, templateVersionId))?.workspace?.apps ?? [];
}

/** The template spec of a workspace's version (undefined once the version is gone). */
export async function workspaceSpec(db: Kysely<Database>, templateVersionId: string): Promise<Partial<TemplateSpec> | undefined> {
  const row = await db.selectFrom('template_versions').select('spec_json').where('id', '=', templateVersionId).executeTakeFirst();
  return row ? (JSON.parse(row.spec_json) as Partial<TemplateSpec>) : undefined;
}

/** The port of the app `name` that a workspace's template version declares; 404 APP_NOT_FOUND otherwise. */
export async function appPort(db: Kysely<Database>, templateVersionId: string, name: string): Promise<number> {
  const app = (await templateApps(db, templateVersionId)).find((candidate) => candidate.name === name);
  if (!app) {
    throw new AppError('APP_NOT_FOUND', `This workspace has no app '${name}'. Run \`den ports WORKSPACE\` to see its apps, or open a port by number at /@owner/workspace/ports/PORT/.`);
  }
  return app.port;
}

/**
 * The URL of a port or app of a workspace (docs/apps.md): its own origin in subdomain mode (when
 * den has an apps wildcard domain and the label fits in 63 characters), else its path on den.
 */
export function appUrl(config: { accessUrl: string; appsWildcardDomain?: string }, owner: string, workspace: string, target: { port: number } | { app: string }): string {
  const origin = config.appsWildcardDomain ? appOrigin(config.accessUrl, config.appsWildcardDomain, owner, workspace, target) : undefined;
  if (origin) return `${origin}/`;
  const base = `${config.accessUrl}/@${encodeURIComponent(owner)}/${encodeURIComponent(workspace)}`;
  return 'port' in target ? `${base}/ports/${target.port}/` : `${base}/apps/${encodeURIComponent(target.app)}/`;
}
