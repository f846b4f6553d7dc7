import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import { shareLevels, type ShareLevel } from '../../protocol/template-fields.ts';
import type { Database } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import { recordWorkspaceEvent } from '../workspaces/events.ts';
import { workspaceSpec } from './apps.ts';

export type ShareTarget = { port: number } | { app: string };

/** The workspace a share concerns, as the app proxy finds it. */
export interface SharedWorkspace {
  id: string;
  owner_id: string;
  template_version_id: string;
}

/**
 * Who may open an app or port of a workspace now: what its owner set (`den share`), else the
 * app's `share` in the template, else `owner`; never wider than the template's `maxShare`
 * (a template version with a lower maximum caps what was set under an older one).
 */
export async function effectiveShare(db: Kysely<Database>, workspace: SharedWorkspace, target: ShareTarget): Promise<ShareLevel> {
  const [row, spec] = await Promise.all([
    db.selectFrom('app_shares').select('level').where('workspace_id', '=', workspace.id).where('target', '=', targetKey(target)).executeTakeFirst(),
    workspaceSpec(db, workspace.template_version_id),
  ]);
  const declared = 'app' in target ? spec?.workspace?.apps?.find((app) => app.name === target.app)?.share : undefined;
  return narrower(row?.level ?? declared ?? 'owner', spec?.workspace?.maxShare ?? 'owner');
}

/** Sets who may open an app or port, within the template's maximum, and records it among the workspace's events. */
export async function setShare(db: Kysely<Database>, clock: Clock, workspace: SharedWorkspace & { label: string }, target: ShareTarget, level: ShareLevel, by: string): Promise<void> {
  const spec = await workspaceSpec(db, workspace.template_version_id);
  const max = spec?.workspace?.maxShare ?? 'owner';
  if (shareLevels.indexOf(level) > shareLevels.indexOf(max)) {
    throw new AppError('SHARE_NOT_ALLOWED', `The template of '${workspace.label}' allows sharing up to '${max}', not '${level}'. Ask a template admin to raise workspace.maxShare.`);
  }
  const now = clock.now();
  const key = targetKey(target);
  await db
    .insertInto('app_shares')
    .values({ workspace_id: workspace.id, target: key, level, updated_at: iso(now) })
    .onConflict((conflict) => conflict.columns(['workspace_id', 'target']).doUpdateSet({ level, updated_at: iso(now) }))
    .execute();
  const what = 'port' in target ? `Port ${target.port}` : `App '${target.app}'`;
  await recordWorkspaceEvent(db, now, {
    workspaceId: workspace.id,
    kind: 'app.share',
    message: `${what} is now shared with ${level === 'owner' ? 'its owner only' : level === 'authenticated' ? 'every signed-in den user' : 'anyone with the URL'} (set by ${by}).`,
    detail: { target: key, level, by },
  });
}

export function targetKey(target: ShareTarget): string {
  return 'port' in target ? `port:${target.port}` : `app:${target.app}`;
}

function narrower(a: ShareLevel, b: ShareLevel): ShareLevel {
  return shareLevels[Math.min(shareLevels.indexOf(a), shareLevels.indexOf(b))];
}
