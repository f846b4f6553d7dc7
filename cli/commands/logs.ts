import type { BuildDto } from '../../protocol/workspaces.ts';
import { describeBuild, followBuild, formatLogLine, renderStepTimings } from '../build-progress.ts';
import { connect } from '../context.ts';
import { ExitCode, UsageError } from '../errors.ts';
import { note, print } from '../output.ts';

/**
 * `den logs WS [-f] [--build N]`: a build's log (the latest by default) with its step timings.
 * The log goes to stdout (it is what was asked for); the timings and the outcome to stderr.
 */
export async function logs(reference: string, options: { follow?: boolean; build?: number; json?: boolean }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const number = options.build ?? (await latestBuildNumber(session.client, ref.owner, ref.name, reference));
  const write = options.json
    ? (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`)
    : (line: Parameters<typeof formatLogLine>[0]) => print(formatLogLine(line));

  let build: BuildDto | null;
  if (options.follow) {
    build = await followBuild(session.client, ref, number, write);
  } else {
    for (const line of await session.client.workspaces.logs(ref.owner, ref.name, number)) write(line);
    build = await session.client.workspaces.build(ref.owner, ref.name, number);
  }
  if (!build || options.json) return;
  const timings = renderStepTimings(build);
  if (timings) note(`\n${timings.trimEnd()}`);
  note(describeBuild(build));
  if (options.follow && build.state !== 'succeeded') throw new ExitCode(1);
}

async function latestBuildNumber(
  client: ReturnType<typeof connect>['client'],
  owner: string,
  name: string,
  reference: string,
): Promise<number> {
  const workspace = await client.workspaces.get(owner, name);
  if (!workspace.latestBuild) {
    throw new UsageError(`${reference} has no builds yet.`, 1);
  }
  return workspace.latestBuild.number;
}
