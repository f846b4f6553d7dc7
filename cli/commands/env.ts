import type { EnvironmentRunDto, RunStreamLine } from '../../protocol/environments.ts';
import { connect } from '../context.ts';
import { ExitCode, UsageError } from '../errors.ts';
import { formatAge, note, print, printJson, printTable } from '../output.ts';

/**
 * `den env show|logs|run|grant|revoke|grants|shared` and `den test`. Output of a task or test goes to
 * stdout and stderr as the command wrote it; den's own lines (what runs, the result) to stderr,
 * so `den test WS 2>/dev/null` keeps what the test printed.
 */
export async function show(reference: string, options: { json?: boolean }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const view = await session.client.environments.view(ref.owner, ref.name);
  if (options.json) return printJson(view);
  print(`Environment of ${view.workspace} (${view.status}${view.viewer === 'teammate' ? ', read-only: you are a teammate' : ''})`);
  printTable(view.services, [
    { header: 'service', value: (s) => s.name },
    { header: 'state', value: (s) => s.state },
    { header: 'version', value: (s) => s.version ?? '' },
    { header: 'ports', value: (s) => s.ports.map((p) => `${p.port}${p.address ? ` (${p.address})` : ''}`).join(', ') },
    { header: 'message', value: (s) => s.message ?? '' },
  ], 'The template declares no services.');
  if (view.apps.length > 0) {
    print('\nApps:');
    for (const app of view.apps) print(`  ${app.name}  ${app.url}${app.service ? `  (preview of service ${app.service})` : ''}`);
  }
  for (const [title, entries] of [['Tasks', view.tasks], ['Tests', view.tests]] as const) {
    if (entries.length === 0) continue;
    print(`\n${title}:`);
    for (const entry of entries) print(`  ${entry.name} (${entry.oneOff ? `one-off from ${entry.service}'s image` : `in ${entry.service}`})  ${entry.lastRun ? describeRun(entry.lastRun) : 'never run'}`);
  }
}

export async function logs(reference: string, services: string[], options: { follow?: boolean; tail: number; json?: boolean }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const abort = new AbortController();
  process.once('SIGINT', () => abort.abort());
  const lines = session.client.environments.logs(ref.owner, ref.name, { services, tail: options.tail, follow: options.follow, signal: abort.signal });
  const width = Math.max(0, ...services.map((s) => s.length));
  for await (const line of lines) {
    if (options.json) {
      process.stdout.write(`${JSON.stringify(line)}\n`);
      continue;
    }
    const text = `${line.service.padEnd(width)} | ${line.at} ${line.line}\n`;
    (line.stream === 'stderr' ? process.stderr : process.stdout).write(text);
  }
}

export async function runTask(reference: string, task: string, options: { json?: boolean }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const run = await runOne(session, ref, 'task', task, { json: options.json });
  if (run.state !== 'passed') throw new ExitCode(exitStatusOf(run));
}

export async function test(reference: string, name: string | undefined, options: { force?: boolean; history?: boolean; json?: boolean }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  if (options.history) {
    const { runs } = await session.client.environments.history(ref.owner, ref.name, { kind: 'test', ...(name ? { name } : {}) });
    if (options.json) return printJson(runs);
    printTable(runs, [
      { header: 'test', value: (r) => r.name },
      { header: 'result', value: (r) => r.state },
      { header: 'exit', value: (r) => (r.exitCode === null ? '' : String(r.exitCode)) },
      { header: 'version', value: (r) => r.version },
      { header: 'started', value: (r) => `${r.startedAt} (${formatAge(r.startedAt)})` },
      { header: 'by', value: (r) => r.by ?? r.trigger },
      { header: 'id', value: (r) => r.id },
    ], `No test of ${ref.owner}/${ref.name} has run yet. Run \`den test ${reference}\`.`);
    return;
  }
  const names = name ? [name] : (await session.client.environments.view(ref.owner, ref.name)).tests.map((t) => t.name);
  if (names.length === 0) throw new UsageError(`${ref.owner}/${ref.name} has no tests: its template declares none (environment.tests).`, 1);
  let failed: EnvironmentRunDto | undefined;
  for (const test of names) {
    const run = await runOne(session, ref, 'test', test, { force: options.force, json: options.json });
    if (run.state !== 'passed') failed ??= run;
  }
  if (failed) throw new ExitCode(exitStatusOf(failed));
}

export async function grant(reference: string, user: string | undefined, options: { group?: string }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const label = `${ref.owner}/${ref.name}`;
  const subject = grantSubject(user, options.group, 'grant', reference);
  if ('group' in subject) {
    await session.client.environments.grantGroup(ref.owner, ref.name, subject.group);
    print(`The members of the group ${subject.group} may now see the environment of ${label} read-only: \`den env show ${label}\`. Every view is recorded (\`den events ${label}\`).`);
    return;
  }
  await session.client.environments.grant(ref.owner, ref.name, subject.user);
  print(`${subject.user} may now see the environment of ${label} read-only: \`den env show ${label}\`. Every view is recorded (\`den events ${label}\`).`);
}

export async function revoke(reference: string, user: string | undefined, options: { group?: string }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const subject = grantSubject(user, options.group, 'revoke', reference);
  if ('group' in subject) {
    await session.client.environments.revokeGroup(ref.owner, ref.name, subject.group);
    print(`The members of the group ${subject.group} may no longer see the environment of ${ref.owner}/${ref.name} through it.`);
    return;
  }
  await session.client.environments.revoke(ref.owner, ref.name, subject.user);
  print(`${subject.user} may no longer see the environment of ${ref.owner}/${ref.name}.`);
}

export async function grants(reference: string, options: { json?: boolean }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const { grants } = await session.client.environments.grants(ref.owner, ref.name);
  if (options.json) return printJson(grants);
  printTable(grants, [
    { header: 'teammate', value: (g) => ('group' in g ? `group ${g.group}` : g.user) },
    { header: 'granted by', value: (g) => g.grantedBy },
    { header: 'since', value: (g) => `${g.createdAt} (${formatAge(g.createdAt)})` },
  ], `Nobody else may see the environment of ${ref.owner}/${ref.name}. Grant a teammate with \`den env grant ${reference} USER\` or a group with \`den env grant ${reference} --group NAME\`.`);
}

/** `den env shared`: the environments others let you see. */
export async function shared(options: { json?: boolean }): Promise<void> {
  const { environments } = await connect().client.environments.shared();
  if (options.json) return printJson(environments);
  printTable(environments, [
    { header: 'workspace', value: (e) => e.workspace },
    { header: 'status', value: (e) => e.status },
    { header: 'through', value: (e) => [...(e.direct ? ['you'] : []), ...e.groups.map((g) => `group ${g}`)].join(', ') },
  ], 'Nobody has shared an environment with you yet. A workspace\'s owner shares one with `den env grant WS YOU` (or a group you are in).');
}

function grantSubject(user: string | undefined, group: string | undefined, verb: 'grant' | 'revoke', reference: string): { user: string } | { group: string } {
  if (user !== undefined && group !== undefined) throw new UsageError(`Name a user or a --group, not both: \`den env ${verb} ${reference} ${user}\` or \`den env ${verb} ${reference} --group ${group}\`.`);
  if (group !== undefined) return { group };
  if (user !== undefined) return { user };
  throw new UsageError(`Name the teammate: \`den env ${verb} ${reference} USER\` or \`den env ${verb} ${reference} --group NAME\`.`);
}

async function runOne(
  session: ReturnType<typeof connect>, ref: { owner: string; name: string }, kind: 'task' | 'test', entry: string, options: { force?: boolean; json?: boolean },
): Promise<EnvironmentRunDto> {
  const abort = new AbortController();
  const interrupt = () => abort.abort();
  process.once('SIGINT', interrupt);
  try {
    if (!options.json) note(`Running ${kind} ${entry} in ${ref.owner}/${ref.name}...`);
    let result: Extract<RunStreamLine, { type: 'result' }> | undefined;
    for await (const line of session.client.environments.run(ref.owner, ref.name, kind, entry, { force: options.force, signal: abort.signal })) {
      if (options.json) process.stdout.write(`${JSON.stringify(line)}\n`);
      if (line.type === 'result') result = line;
      else if (!options.json) (line.stream === 'stderr' ? process.stderr : process.stdout).write(`${line.line}\n`);
    }
    if (!result) throw new UsageError(`The ${kind} ${entry} ended without a result (interrupted).`, 130);
    if (!options.json) note(`${kind === 'task' ? 'Task' : 'Test'} ${entry}: ${describeRun(result.run)}${result.cached ? ' — cached: this version passed before; --force runs it again' : ''}`);
    return result.run;
  } finally {
    process.removeListener('SIGINT', interrupt);
  }
}

function describeRun(run: EnvironmentRunDto): string {
  const outcome = run.state === 'running' || run.state === 'passed' || run.state === 'cancelled'
    ? run.state
    : `failed${run.exitCode !== null ? ` (exit status ${run.exitCode})` : ''}`;
  return `${outcome}, version ${run.version}, ${formatAge(run.startedAt)}`;
}

/** The command's own status when it has one (1 otherwise), so scripts see what the test returned. */
function exitStatusOf(run: EnvironmentRunDto): number {
  return run.exitCode !== null && run.exitCode > 0 && run.exitCode < 256 ? run.exitCode : 1;
}
