import type { Kysely, Transaction } from 'kysely';
import type { WorkspaceEvent } from '../../protocol/workspaces.ts';
import type { Database } from '../store/schema.ts';
import { iso } from '../store/time.ts';

/**
 * The events of a workspace: things that happened to it that its owner should be able to see
 * (`den events`), such as a second agent connection with the workspace's token. Each workspace
 * keeps its newest KEEP_EVENTS; an agent that triggers events in a loop only pushes out its own
 * workspace's older ones.
 */
export const KEEP_EVENTS = 200;

export interface NewWorkspaceEvent {
  workspaceId: string;
  kind: string;
  /** a full sentence for the owner */
  message: string;
  detail?: Record<string, unknown>;
}

export async function recordWorkspaceEvent(db: Kysely<Database>, now: Date, event: NewWorkspaceEvent): Promise<void> {
  await db.transaction().execute((tx) => insertWorkspaceEvent(tx, now, event));
}

/** recordWorkspaceEvent inside a transaction the caller holds (so a state change and its event land together). */
export async function insertWorkspaceEvent(tx: Transaction<Database>, now: Date, event: NewWorkspaceEvent): Promise<void> {
  await tx.insertInto('workspace_events').values({
    workspace_id: event.workspaceId,
    ts: iso(now),
    kind: event.kind,
    message: event.message,
    detail_json: JSON.stringify(event.detail ?? {}),
  }).execute();
  // The oldest kept event's id; everything of this workspace below it goes.
  const oldestKept = tx.selectFrom('workspace_events').select('id').where('workspace_id', '=', event.workspaceId)
    .orderBy('id', 'desc').limit(1).offset(KEEP_EVENTS - 1);
  await tx.deleteFrom('workspace_events').where('workspace_id', '=', event.workspaceId).where('id', '<', oldestKept).execute();
}

/** The workspace's events, newest first. */
export async function listWorkspaceEvents(db: Kysely<Database>, workspaceId: string, limit = KEEP_EVENTS): Promise<WorkspaceEvent[]> {
  const rows = await db.selectFrom('workspace_events').selectAll().where('workspace_id', '=', workspaceId)
    .orderBy('id', 'desc').limit(limit).execute();
  return rows.map((row) => ({
    id: Number(row.id),
    ts: row.ts,
    kind: row.kind,
    message: row.message,
    detail: JSON.parse(row.detail_json) as Record<string, unknown>,
  }));
}
