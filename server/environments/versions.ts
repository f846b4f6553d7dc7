import { createHash } from 'node:crypto';
import type { EnvironmentSpec, TaskSpec, TestSpec } from '../../protocol/template.ts';
import { dependencyOrder } from '../builds/plan.ts';
import type { ServicePlan } from '../runtimes/driver.ts';

/**
 * Versions of an environment's services, tasks and tests, in the manner of Garden's action
 * versions: a content hash of everything that decides what the entry does, its dependencies'
 * versions included, so a change anywhere below an entry changes the entry's version.
 *
 *  - a service: its planned spec (image, command, workdir, env after `${{ }}` evaluation,
 *    ports, readiness, volumes, and its agent's revision) and the versions of its `dependsOn`;
 *  - a task: its command, the version of the service it runs in, the content hash of each
 *    declared input path, and the versions of the tasks it depends on;
 *  - a test: the same, its `dependsOn` naming tasks.
 *
 * Each version is the first 16 hex digits of SHA-256 over `den-version-1\n` followed by the
 * canonical JSON (object keys sorted, no whitespace) of { kind, name, config, inputs,
 * dependencies }. Pure: input hashes come in as data (inputs.ts computes them in the
 * workspace), so the same arguments always give the same versions.
 */
export interface EnvironmentVersions {
  services: Record<string, string>;
  tasks: Record<string, string>;
  tests: Record<string, string>;
}

/** Content hashes of input paths as written in the template (inputs.ts), by path. */
export type InputHashes = Readonly<Record<string, string>>;

const VERSION_PREFIX = 'den-version-1\n';
/** 64 bits: enough to tell one workspace's versions apart, short enough to read in a log line */
const VERSION_HEX_DIGITS = 16;

/** The versions of every service of a plan, in dependency order. */
export function serviceVersions(services: readonly ServicePlan[]): Record<string, string> {
  const byName = Object.fromEntries(services.map((service) => [service.name, service]));
  const versions: Record<string, string> = {};
  for (const name of dependencyOrder(byName)) {
    const { agent, dependsOn, ...config } = byName[name];
    versions[name] = version({
      kind: 'service',
      name,
      config: { ...config, agent: agent?.revision ?? null },
      dependencies: Object.fromEntries(dependsOn.filter((d) => d in versions).map((d) => [d, versions[d]])),
    });
  }
  return versions;
}

/** The versions of the environment's tasks and tests, given its services' versions and the hashes of every declared input. */
export function entryVersions(environment: EnvironmentSpec | undefined, services: Readonly<Record<string, string>>, inputs: InputHashes): Pick<EnvironmentVersions, 'tasks' | 'tests'> {
  const taskSpecs = environment?.tasks ?? {};
  const tasks: Record<string, string> = {};
  for (const name of dependencyOrder(taskSpecs)) tasks[name] = entryVersion('task', name, taskSpecs[name], services, inputs, tasks);
  const tests: Record<string, string> = {};
  for (const [name, spec] of Object.entries(environment?.tests ?? {})) tests[name] = entryVersion('test', name, spec, services, inputs, tasks);
  return { tasks, tests };
}

/** Every input path the environment's tasks and tests declare, each once, sorted. */
export function declaredInputs(environment: EnvironmentSpec | undefined): string[] {
  const entries = [...Object.values(environment?.tasks ?? {}), ...Object.values(environment?.tests ?? {})];
  return [...new Set(entries.flatMap((entry) => entry.inputs ?? []))].sort();
}

/** Canonical JSON: object keys sorted at every level, so equal values always give equal text. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

function entryVersion(
  kind: 'task' | 'test', name: string, spec: TaskSpec | TestSpec,
  services: Readonly<Record<string, string>>, inputs: InputHashes, tasks: Readonly<Record<string, string>>,
): string {
  const missing = (spec.inputs ?? []).filter((path) => inputs[path] === undefined);
  // A bug in the caller, not in the template: every declared input must have been hashed.
  if (missing.length > 0) throw new Error(`The inputs ${missing.join(', ')} of ${kind} '${name}' were not hashed; this is a bug in den.`);
  return version({
    kind,
    name,
    // where it runs is part of it; absent (an agent run) keeps the versions written before one-off runs existed
    config: { run: spec.run, service: spec.service, ...(spec.oneOff ? { oneOff: true } : {}) },
    inputs: Object.fromEntries((spec.inputs ?? []).map((path) => [path, inputs[path]])),
    dependencies: {
      [`service:${spec.service}`]: services[spec.service] ?? null,
      ...Object.fromEntries((spec.dependsOn ?? []).map((task) => [`task:${task}`, tasks[task] ?? null])),
    },
  });
}

function version(value: unknown): string {
  return createHash('sha256').update(VERSION_PREFIX).update(canonicalJson(value)).digest('hex').slice(0, VERSION_HEX_DIGITS);
}
