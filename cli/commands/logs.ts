import type { BuildDto } from '../../protocol/workspaces.ts';
import { describeBuild, followBuild, formatLogLine, renderStepTimings } from '../build-progress.ts';
import { connect } from '../context.ts';
import { ExitCode, UsageError } from '../errors.ts';
import { note, print } from '../output.ts';

/**
 * `den logs WS [-f] [--build N]`: a build's log (the latest by default) with its step timings.
 * The log goes to stdout (it is what was asked for); the timings and the outcome to stderr.
 * `den logs WS --service NAME [-f] [--tail N]`: an environment service's output instead.
 */
export async function logs(
  reference: string,
  options: { follow?: boolean; build?: number; json?: boolean; service?: string; tail?: string },
): Promise<void> {
  const session = connect();
  if (options.service !== undefined) {
    if (options.build !== undefined) throw new UsageError('--build and --service do not go together: a service log is not a build\'s.');
    return serviceLogs(session, reference, options.service, { ...options, tail: parseTail(options.tail) });
  }
  if (options.tail !== undefined) throw new UsageError('--tail goes with --service: a build log is shown whole (den logs WS --service NAME --tail 50).');
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

/**
 * A service's stdout lines to stdout and its stderr lines to stderr, as `docker logs` does, so
 * `den logs WS --service db 2>/dev/null` keeps what the service printed normally.
 */
async function serviceLogs(
  session: ReturnType<typeof connect>,
  reference: string,
  service: string,
  options: { follow?: boolean; json?: boolean; tail?: number },
): Promise<void> {
  const ref = await session.workspaceRef(reference);
  const lines = session.client.workspaces.serviceLogs(ref.owner, ref.name, service, { follow: options.follow, tail: options.tail });
  for await (const entry of lines) {
    if (options.json) process.stdout.write(`${JSON.stringify(entry)}\n`);
    else (entry.stream === 'stderr' ? process.stderr : process.stdout).write(`${entry.line}\n`);
  }
}

function parseTail(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isInteger(number) || number < 0) throw new UsageError(`--tail wants a number of lines (0 or more), not '${value}'.`);
  return number;
}
