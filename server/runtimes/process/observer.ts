import type { RuntimeEvent } from '../driver.ts';
import { isAlive } from './processes.ts';
import { listStateDirs, readState, workspacePaths, type TrackedProcess } from './state.ts';

/**
 * How often the process runtime checks that every tracked process still runs. Processes are
 * detached so that workspaces outlive the server; a restarted server is not their parent and
 * gets no exit event for them, so one timer for the whole runtime checks each tracked pid
 * (a signal 0 and a /proc read each: about a millisecond for a hundred workspaces).
 */
export const OBSERVE_INTERVAL_MS = 1_000;

/** How long an exit no scan reported is remembered (a stop or restart by den itself is never reported). */
const EXIT_MEMORY_MS = 60_000;

export interface ProcessObserver {
  /** How a process this server started ended (from its exit event), for the next report of it. */
  recordExit(pid: number, code: number | null, signal: NodeJS.Signals | null): void;
  observe(onEvent: (event: RuntimeEvent) => void): () => void;
}

/**
 * Reports each tracked agent or service process that no longer runs, once, as an `exited`
 * event. Workspaces in the middle of a driver verb (`busy`) are skipped: den stopping its own
 * processes is not news, and the verb rewrites the state file before it lets go.
 */
export function createProcessObserver(options: { dataDir: string; busy: (workspaceId: string) => boolean; intervalMs?: number }): ProcessObserver {
  /** pid -> how it ended; kept until reported or EXIT_MEMORY_MS old (den stopping its own processes) */
  const exits = new Map<number, { code: number | null; signal: NodeJS.Signals | null; at: number }>();
  /** deaths already reported (workspace, subject, pid and start time), so each is reported once */
  const reported = new Set<string>();
  /**
   * deaths seen once without an exit recorded: a child of this server can be gone from /proc a
   * moment before Node delivers its exit event, so such a death waits one scan for its cause
   */
  const unexplained = new Set<string>();

  function scan(onEvent: (event: RuntimeEvent) => void): void {
    const seen = new Set<string>();
    for (const workspaceId of listStateDirs(options.dataDir)) {
      if (options.busy(workspaceId)) continue;
      const state = readState(workspacePaths(options.dataDir, workspaceId));
      const tracked: [RuntimeEvent['subject'], TrackedProcess][] = [
        ...(state.agent ? [[{ type: 'agent' }, state.agent] as [RuntimeEvent['subject'], TrackedProcess]] : []),
        ...Object.entries(state.services).map(([name, process]): [RuntimeEvent['subject'], TrackedProcess] => [{ type: 'service', name }, process]),
        ...Object.entries(state.serviceAgents).map(([name, process]): [RuntimeEvent['subject'], TrackedProcess] => [{ type: 'agent', name }, process]),
      ];
      for (const [subject, process] of tracked) {
        const key = `${workspaceId}/${subject.type}/${subject.name ?? ''}/${process.pid}/${process.startTime}`;
        seen.add(key);
        if (reported.has(key) || isAlive(process)) continue;
        const exit = exits.get(process.pid);
        if (!exit && !unexplained.has(key)) {
          unexplained.add(key);
          continue;
        }
        unexplained.delete(key);
        reported.add(key);
        exits.delete(process.pid);
        onEvent({
          workspaceId, kind: 'exited', subject, at: new Date(), cause: describeExit(exit),
          detail: { pid: process.pid, exitCode: exit?.code ?? null, signal: exit?.signal ?? null },
        });
      }
    }
    for (const [pid, exit] of exits) if (Date.now() - exit.at > EXIT_MEMORY_MS) exits.delete(pid);
    // Forget deaths whose process the state file no longer tracks (restarted or stopped since).
    for (const key of reported) if (!seen.has(key)) reported.delete(key);
    for (const key of unexplained) if (!seen.has(key)) unexplained.delete(key);
  }

  return {
    recordExit(pid, code, signal) {
      exits.set(pid, { code, signal, at: Date.now() });
    },
    observe(onEvent) {
      const timer = setInterval(() => scan(onEvent), options.intervalMs ?? OBSERVE_INTERVAL_MS);
      timer.unref();
      return () => clearInterval(timer);
    },
  };
}

function describeExit(exit: { code: number | null; signal: NodeJS.Signals | null } | undefined): string {
  if (!exit) return '(den was not its parent, so how it ended is unknown)';
  if (exit.signal) return `(killed by signal ${exit.signal})`;
  return `with exit code ${exit.code}`;
}
