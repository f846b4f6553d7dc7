import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';

/**
 * Records that a workspace is in use (SSH sessions and their traffic today), coarsely: the row
 * is written at most once per RESOLUTION_MS per workspace, so a busy session costs one write a
 * minute, not one per packet. `last_activity_at` is what the API shows as `lastActivityAt`.
 */
export interface ActivityRecorder {
  touch(workspaceId: string): void;
}

const RESOLUTION_MS = 60_000;

export function createActivityRecorder(db: Kysely<Database>, clock: Clock, onError: (error: unknown) => void): ActivityRecorder {
  const lastWritten = new Map<string, number>();
  return {
    touch(workspaceId) {
      const now = clock.now();
      const last = lastWritten.get(workspaceId);
      if (last !== undefined && now.getTime() - last < RESOLUTION_MS) return;
      lastWritten.set(workspaceId, now.getTime());
      // the map holds one number per workspace touched since start; forget the stale ones now and then
      if (lastWritten.size > 10_000) {
        for (const [id, at] of lastWritten) if (now.getTime() - at >= RESOLUTION_MS) lastWritten.delete(id);
      }
      db.updateTable('workspaces').set({ last_activity_at: iso(now) }).where('id', '=', workspaceId).execute().catch(onError);
    },
  };
}
