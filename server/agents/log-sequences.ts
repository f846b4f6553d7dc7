/**
 * The highest `log` frame sequence appended per workspace and agent process (`instance`), so
 * frames an agent resends after a reconnect are appended once.
 *
 * Bounded, because `instance` comes from the agent and the agent is not trusted: one that
 * reconnects with a new instance each time keeps only its newest MAX_INSTANCES_PER_WORKSPACE,
 * and the whole map keeps the MAX_WORKSPACES most recently active workspaces. Forgetting an
 * instance costs at most duplicate lines in that workspace's own (capped) build log, if that
 * very agent process resends old frames later.
 */
export const MAX_INSTANCES_PER_WORKSPACE = 4;
export const MAX_WORKSPACES = 10_000;

export interface LogSequences {
  /** True when `seq` is new for this workspace's agent process (and records it). */
  advance(workspaceId: string, instance: string, seq: number): boolean;
  /** Drops the workspace's sequences (its agent is gone for good). */
  forget(workspaceId: string): void;
  /** the number of (workspace, instance) entries held */
  size(): number;
}

export function createLogSequences(limits = { instances: MAX_INSTANCES_PER_WORKSPACE, workspaces: MAX_WORKSPACES }): LogSequences {
  // Maps iterate in insertion order: re-inserting on use makes the first key the least recently used.
  const byWorkspace = new Map<string, Map<string, number>>();
  let entries = 0;

  return {
    advance(workspaceId, instance, seq) {
      let instances = byWorkspace.get(workspaceId);
      if (instances) byWorkspace.delete(workspaceId);
      else {
        instances = new Map();
        if (byWorkspace.size >= limits.workspaces) dropWorkspace(byWorkspace.keys().next().value!);
      }
      byWorkspace.set(workspaceId, instances);
      const seen = instances.get(instance);
      if (seen === undefined) {
        if (instances.size >= limits.instances) {
          instances.delete(instances.keys().next().value!);
          entries--;
        }
        entries++;
      } else instances.delete(instance);
      instances.set(instance, Math.max(seen ?? 0, seq));
      return seq > (seen ?? 0);
    },

    forget(workspaceId) {
      dropWorkspace(workspaceId);
    },

    size() {
      return entries;
    },
  };

  function dropWorkspace(workspaceId: string): void {
    entries -= byWorkspace.get(workspaceId)?.size ?? 0;
    byWorkspace.delete(workspaceId);
  }
}
