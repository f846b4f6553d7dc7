import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { Database } from '../store/schema.ts';
import { iso } from '../store/time.ts';
import { insertWorkspaceEvent } from '../workspaces/events.ts';

/**
 * The observed health of a workspace (workspaces.health*), written only by the reconciler. It
 * sits beside `status`: a workspace the lifecycle shows running whose agent died is running and
 * down, until a later start build brings it back.
 */
export interface DownReport {
  workspaceId: string;
  /** a stable snake_case event kind, e.g. agent_exited */
  kind: string;
  /** a full sentence for the owner, naming what died and when */
  message: string;
  detail: Record<string, unknown>;
}

/** Marks a workspace down and records the event with its cause; false when it already was down. */
export async function markDown(db: Kysely<Database>, now: Date, report: DownReport): Promise<boolean> {
  // one transaction: whoever sees the workspace down also sees the event saying why
  return await db.transaction().execute(async (tx) => {
    const result = await tx.updateTable('workspaces')
      .set({ health: 'down', health_message: report.message, health_at: iso(now) })
      .where('id', '=', report.workspaceId)
      .where((eb) => eb.or([eb('health', 'is', null), eb('health', '!=', 'down')]))
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) !== 1) return false;
    await insertWorkspaceEvent(tx, now, { workspaceId: report.workspaceId, kind: report.kind, message: report.message, detail: report.detail });
    return true;
  });
}

/** Marks a down workspace healthy again (a start build after it succeeded and its agent is ready); false when it was not down. */
export async function markRecovered(db: Kysely<Database>, now: Date, workspaceId: string, message: string, detail: Record<string, unknown>): Promise<boolean> {
  return await db.transaction().execute(async (tx) => {
    const result = await tx.updateTable('workspaces')
      .set({ health: 'ok', health_message: message, health_at: iso(now) })
      .where('id', '=', workspaceId).where('health', '=', 'down')
      .executeTakeFirst();
    if (Number(result.numUpdatedRows) !== 1) return false;
    await insertWorkspaceEvent(tx, now, { workspaceId, kind: 'workspace_recovered', message, detail });
    return true;
  });
}

/**
 * The error for a request that needs the agent of a workspace known to be down: what died, when,
 * and how to start it again (instead of "it reconnects by itself", which it will not).
 */
export function workspaceDownError(workspace: { name: string; health: string | null; health_message: string | null }): AppError | undefined {
  if (workspace.health !== 'down') return undefined;
  return new AppError('WORKSPACE_DOWN', `${workspace.health_message ?? 'The workspace is down.'} Start it again with \`den start ${workspace.name}\`.`);
}

/** "12:03:05 UTC", the time of day in the owner's sentences (the full timestamp is in health_at). */
export function timeOfDay(at: Date): string {
  return `${iso(at).slice(11, 19)} UTC`;
}
