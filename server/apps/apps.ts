import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import { servicePreviews, type ServicePreview } from '../../protocol/previews.ts';
import type { TemplateSpec } from '../../protocol/template-fields.ts';
import type { RuntimeDriver } from '../runtimes/driver.ts';
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

/** The apps and the environment services' preview URLs of a workspace's template version, by the names their URLs carry. */
export async function namedApps(db: Kysely<Database>, templateVersionId: string): Promise<{ apps: TemplateApp[]; previews: ServicePreview[] }> {
  const spec = await workspaceSpec(db, templateVersionId);
  return { apps: spec?.workspace?.apps ?? [], previews: spec ? servicePreviews(spec) : [] };
}

/** Where an app URL's connection goes, as the workspace's agent dials it: a port on loopback, or an environment service's address. */
export interface AppTarget {
  port: number;
  /** an environment service's host as the workspace resolves it; absent: loopback */
  host?: string;
  /** the environment service whose preview this is */
  service?: string;
}

/** The workspace an app name is resolved for (the runtime places its services by it). */
export interface AppWorkspace {
  id: string;
  name: string;
  owner_id: string;
  owner_name: string;
  template_version_id: string;
}

/**
 * What the app `name` of a workspace reaches: an app of the template (a port in the workspace),
 * or an environment service's preview (the service port where the runtime put it, the address
 * the workspace itself uses: a name on docker's network or kubernetes' Service, a loopback port
 * on the process runtime). 404 APP_NOT_FOUND when there is neither.
 */
/** Refuses (404 APP_NOT_FOUND) a name that is neither an app nor a service preview of the workspace's template version. */
export async function checkAppName(db: Kysely<Database>, templateVersionId: string, name: string): Promise<void> {
  const { apps, previews } = await namedApps(db, templateVersionId);
  if (![...apps, ...previews].some((candidate) => candidate.name === name)) throw appNotFound(name);
}

function appNotFound(name: string): AppError {
  return new AppError('APP_NOT_FOUND', `This workspace has no app '${name}'. Run \`den ports WORKSPACE\` to see its apps, or open a port by number at /@owner/workspace/ports/PORT/.`);
}

export async function appTarget(db: Kysely<Database>, driver: Pick<RuntimeDriver, 'resolveEndpoints'>, workspace: AppWorkspace, name: string): Promise<AppTarget> {
  const { apps, previews } = await namedApps(db, workspace.template_version_id);
  const app = apps.find((candidate) => candidate.name === name);
  if (app) return { port: app.port };
  const preview = previews.find((candidate) => candidate.name === name);
  if (!preview) throw appNotFound(name);
  const identity = { id: workspace.id, name: workspace.name, ownerId: workspace.owner_id, ownerName: workspace.owner_name };
  const endpoint = (await driver.resolveEndpoints(identity, [{ service: preview.service, ports: [preview.port] }]))[preview.service]?.[preview.port];
  if (!endpoint) {
    throw new AppError('APP_NOT_FOUND', `The runtime does not say where service '${preview.service}' listens on port ${preview.port}. Start the workspace again with \`den start\`.`);
  }
  return { port: endpoint.port, host: endpoint.host, service: preview.service };
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
