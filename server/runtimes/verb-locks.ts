/**
 * One verb at a time per workspace (start, stop, delete, garbage collection), and when den's
 * last verb on each ended: what a runtime reports about a workspace while den works on it, or
 * just after, is den's own doing and not news.
 */
export interface VerbLocks {
  serialize<T>(workspaceId: string, work: () => Promise<T>): Promise<T>;
  active(workspaceId: string): boolean;
  /** Date.now() when den's last verb on the workspace ended (0: none yet) */
  endedAt(workspaceId: string): number;
}

export function createVerbLocks(): VerbLocks {
  const locks = new Map<string, Promise<unknown>>();
  const ended = new Map<string, number>();
  return {
    serialize(workspaceId, work) {
      const next = (locks.get(workspaceId) ?? Promise.resolve()).catch(() => undefined).then(work);
      locks.set(workspaceId, next);
      void next.finally(() => {
        ended.set(workspaceId, Date.now());
        if (locks.get(workspaceId) === next) locks.delete(workspaceId);
      }).catch(() => undefined);
      return next;
    },
    active: (workspaceId) => locks.has(workspaceId),
    endedAt: (workspaceId) => ended.get(workspaceId) ?? 0,
  };
}
