import type { Kysely } from 'kysely';
import type { EnqueueRequest } from '../builds/queue.ts';
import type { Database } from '../store/schema.ts';
import type { Clock } from '../store/time.ts';
import { resolveParameters } from '../templates/parameters.ts';
import { getTemplateVersionById } from '../templates/store.ts';

/**
 * The reconciler's automatic restart: a start build of the workspace's own template version and
 * parameters, on behalf of its owner, as `den start` with no new values would queue it. Throws
 * BUILD_IN_PROGRESS when a build is already queued or running (the next pass looks again).
 */
export function startAgainAsOwner(
  db: Kysely<Database>,
  clock: Clock,
  enqueue: (request: EnqueueRequest) => Promise<unknown>,
): (workspaceId: string) => Promise<void> {
  return async (workspaceId) => {
    const row = await db.selectFrom('workspaces').select(['owner_id', 'template_version_id', 'params_json'])
      .where('id', '=', workspaceId).executeTakeFirstOrThrow();
    const version = await getTemplateVersionById(db, row.template_version_id);
    if (!version) throw new Error('The template version of this workspace no longer exists, so it cannot be started again.');
    const params = resolveParameters(version.spec, {}, JSON.parse(row.params_json) as Record<string, unknown>);
    await enqueue({
      workspaceId, transition: 'start', reason: 'auto-restart', initiatorId: row.owner_id,
      templateVersionId: row.template_version_id, params, now: clock.now(),
    });
  };
}
