import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { EnvironmentSpec } from '../../protocol/template.ts';
import type { DriverContext, ServicePlan } from '../runtimes/driver.ts';
import type { Database } from '../store/schema.ts';
import { iso } from '../store/time.ts';
import { hashInputs } from './inputs.ts';
import { lastPassedRun, runEntry, type EntryKind, type RunDeps, type RunOptions, type RunRow } from './runs.ts';
import { declaredInputs, entryVersions, serviceVersions, type EnvironmentVersions } from './versions.ts';

/**
 * The environment part of a start build, once every agent is ready: records the version of each
 * service (saying in the build log which are unchanged), then runs each task whose version has
 * no passed run yet, in dependency order, its output in the build log. A task that fails fails
 * the build; an unchanged one is skipped with a line that says so.
 */
export async function upEnvironment(
  deps: RunDeps, workspaceId: string, environment: EnvironmentSpec | undefined, services: readonly ServicePlan[],
  context: DriverContext, buildId: string,
): Promise<void> {
  const versions = serviceVersions(services);
  const previous = await storedServiceVersions(deps.db, workspaceId);
  for (const [name, version] of Object.entries(versions)) {
    const was = previous[name];
    context.log(`Service ${name}: version ${version}${was === version ? ', unchanged' : was ? ` (was ${was})` : ''}.`);
  }
  await storeServiceVersions(deps.db, workspaceId, versions, iso(deps.clock.now()));
  if (Object.keys(environment?.tasks ?? {}).length === 0) return;

  const inputs = await hashInputs(deps.agents, workspaceId, declaredInputs(environment), context.signal);
  const { tasks } = entryVersions(environment, versions, inputs);
  for (const [name, version] of Object.entries(tasks)) {
    if (await lastPassedRun(deps.db, workspaceId, 'task', name, version)) {
      context.log(`Task ${name} is unchanged (version ${version}): skipped.`);
      continue;
    }
    const spec = environment!.tasks![name];
    context.log(`Running task ${name} (version ${version}) in service ${spec.service}: ${spec.run}`);
    const run = await runEntry(deps, workspaceId, { kind: 'task', name, spec, version }, {
      trigger: 'build', buildId, signal: context.signal, onLine: (stream, line) => context.log(`[task ${name}] ${line}`, stream),
    });
    if (run.state !== 'passed') {
      throw new AppError('TASK_FAILED',
        `Task '${name}' failed${run.exit_code !== null ? ` with exit status ${run.exit_code}` : ''}; its output is above. Fix it and start the workspace again (\`den start WS\`), or run it alone with \`den env run WS ${name}\`.`);
    }
    context.log(`Task ${name} passed.`);
  }
}

/**
 * The versions of a running environment now: its services' as its last start build recorded
 * them, its tasks' and tests' from their commands and the current content of their inputs.
 */
export async function currentVersions(deps: RunDeps, workspaceId: string, environment: EnvironmentSpec | undefined, signal?: AbortSignal): Promise<EnvironmentVersions> {
  const services = await storedServiceVersions(deps.db, workspaceId);
  const inputs = await hashInputs(deps.agents, workspaceId, declaredInputs(environment), signal);
  return { services, ...entryVersions(environment, services, inputs) };
}

/**
 * `den env run` and `den test`: runs one task (always) or test (unless a passed run of its
 * current version exists and `force` is not set: then that run is the answer, cached).
 */
export async function runOnDemand(
  deps: RunDeps, workspace: { id: string; label: string }, environment: EnvironmentSpec | undefined,
  kind: EntryKind, name: string, options: RunOptions & { force?: boolean },
): Promise<{ run: RunRow; cached: boolean }> {
  const entries = kind === 'task' ? environment?.tasks : environment?.tests;
  const spec = entries && Object.hasOwn(entries, name) ? entries[name] : undefined;
  if (!spec) throw unknownEntry(workspace.label, kind, name, Object.keys(entries ?? {}));
  const versions = await currentVersions(deps, workspace.id, environment, options.signal);
  const version = (kind === 'task' ? versions.tasks : versions.tests)[name];
  if (kind === 'test' && !options.force) {
    const cached = await lastPassedRun(deps.db, workspace.id, kind, name, version);
    if (cached) return { run: cached, cached: true };
  }
  return { run: await runEntry(deps, workspace.id, { kind, name, spec, version }, options), cached: false };
}

export async function storedServiceVersions(db: Kysely<Database>, workspaceId: string): Promise<Record<string, string>> {
  const rows = await db.selectFrom('environment_service_versions').select(['service', 'version']).where('workspace_id', '=', workspaceId).execute();
  return Object.fromEntries(rows.map((row) => [row.service, row.version]));
}

async function storeServiceVersions(db: Kysely<Database>, workspaceId: string, versions: Record<string, string>, now: string): Promise<void> {
  await db.transaction().execute(async (tx) => {
    await tx.deleteFrom('environment_service_versions').where('workspace_id', '=', workspaceId).execute();
    const rows = Object.entries(versions).map(([service, version]) => ({ workspace_id: workspaceId, service, version, updated_at: now }));
    if (rows.length > 0) await tx.insertInto('environment_service_versions').values(rows).execute();
  });
}

function unknownEntry(workspace: string, kind: EntryKind, name: string, known: string[]): AppError {
  const what = kind === 'task' ? 'task' : 'test';
  const list = known.length > 0 ? `its ${what}s are ${known.join(', ')}` : `its template declares no ${what}s (environment.${what}s)`;
  return new AppError(kind === 'task' ? 'TASK_NOT_FOUND' : 'TEST_NOT_FOUND', `Workspace ${workspace} has no ${what} '${name}'; ${list}. Run \`den env show ${workspace}\` to see them.`);
}
