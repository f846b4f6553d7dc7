import type { DenClient } from '../client/client.ts';
import { isDenApiError } from '../client/errors.ts';
import type { BuildDto, BuildLogLine } from '../protocol/workspaces.ts';
import { ExitCode } from './errors.ts';
import type { WorkspaceRef } from './refs.ts';
import { formatDuration, note, renderTable } from './output.ts';

const FINISHED = new Set(['succeeded', 'failed', 'canceled']);
/** Pause before re-opening a log stream that ended while the build was still going (a proxy cut it). */
const REFOLLOW_DELAY_MS = 500;

/**
 * Streams a build's log as it happens and resolves with the finished build. Re-follows from
 * the last line seen when the stream ends before the build does. Ctrl-C stops following (the
 * build itself goes on) and exits 130. Resolves with null when the workspace
 * is gone (a delete build that finished removes the workspace and with it its builds).
 */
export async function followBuild(
  client: DenClient,
  ref: WorkspaceRef,
  number: number,
  write: (line: BuildLogLine) => void,
): Promise<BuildDto | null> {
  const controller = new AbortController();
  const onInterrupt = () => controller.abort();
  process.once('SIGINT', onInterrupt);
  let after = 0;
  try {
    for (;;) {
      try {
        for await (const line of client.workspaces.followLogs(ref.owner, ref.name, number, { after, signal: controller.signal })) {
          after = Math.max(after, line.id);
          write(line);
        }
      } catch (error) {
        if (controller.signal.aborted) break;
        // A deleted workspace stops answering for its logs mid-stream; the build result says how it ended.
        if (!isDenApiError(error) || error.status !== 404) throw error;
      }
      if (controller.signal.aborted) break;
      const build = await finishedBuild(client, ref, number);
      if (build !== undefined) return build;
      await new Promise((resolve) => setTimeout(resolve, REFOLLOW_DELAY_MS));
    }
    note(`\nStopped following. The build goes on on the server; run \`den logs ${refText(ref)} -f\` to follow it again.`);
    throw new ExitCode(130);
  } finally {
    process.off('SIGINT', onInterrupt);
  }
}

/** A log line for people: the step's own output indented under the `==> step` lines the server writes. */
export function formatLogLine(line: BuildLogLine): string {
  if (line.stream === 'system') return line.line;
  const prefix = line.step ? `${line.step} | ` : '';
  return `    ${prefix}${line.line}`;
}

/** The per-step timings of a build as a small table. */
export function renderStepTimings(build: BuildDto): string {
  if (build.steps.length === 0) return '';
  return renderTable(build.steps, [
    { header: 'step', value: (step) => step.name },
    { header: 'state', value: (step) => step.state },
    { header: 'took', value: (step) => formatDuration(step.durationMs), align: 'right' },
  ]);
}

/** One sentence on how a build ended, e.g. "Build #3 (start) succeeded in 1.4s." */
export function describeBuild(build: BuildDto): string {
  const took =
    build.startedAt && build.finishedAt ? ` in ${formatDuration(Date.parse(build.finishedAt) - Date.parse(build.startedAt))}` : '';
  const base = `Build #${build.number} (${build.transition}) ${build.state}${took}`;
  return build.error ? `${base}: ${build.error}` : `${base}.`;
}

export function refText(ref: WorkspaceRef): string {
  return `${ref.owner}/${ref.name}`;
}

/** The build once it has finished; undefined while it runs; null when the workspace no longer exists. */
async function finishedBuild(client: DenClient, ref: WorkspaceRef, number: number): Promise<BuildDto | null | undefined> {
  try {
    const build = await client.workspaces.build(ref.owner, ref.name, number);
    return FINISHED.has(build.state) ? build : undefined;
  } catch (error) {
    if (isDenApiError(error) && error.code === 'WORKSPACE_NOT_FOUND') return null;
    throw error;
  }
}
