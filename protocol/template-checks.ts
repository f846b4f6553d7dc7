import { servicePreviews } from './previews.ts';
import { shareLevels, type ParameterSpec, type ParameterValue, type TemplateSpec } from './template-fields.ts';
import { templatePathProblem, templatePaths, withoutExpressions } from './template-paths.ts';

/**
 * Rules a field-by-field schema cannot express: names that must exist or be unique, service
 * dependency cycles, defaults that must satisfy their own options and validation. Pure, so the
 * same rules run in the schema (push time) and for parameter values (create/update time).
 */

export interface TemplateCheckIssue {
  path: (string | number)[];
  message: string;
}

export function checkTemplate(spec: TemplateSpec): TemplateCheckIssue[] {
  return [...checkParameters(spec.parameters), ...checkWorkspace(spec), ...checkEnvironment(spec), ...checkPaths(spec)];
}

/**
 * Why `value` (already of the parameter's JS type) does not satisfy the parameter; empty when
 * it does. Each entry is a phrase that follows the parameter's name ("must be one of 1, 2, 4").
 */
export function parameterValueProblems(parameter: ParameterSpec, value: ParameterValue): string[] {
  const typeProblem = typeMismatch(parameter, value);
  if (typeProblem) return [typeProblem];
  const problems: string[] = [];
  const options = parameter.options?.map((option) => (typeof option === 'object' ? option.value : option));
  const items = Array.isArray(value) ? value : [value];
  if (options) {
    const outside = items.filter((item) => !options.some((option) => option === item));
    if (outside.length > 0) {
      problems.push(`must be ${Array.isArray(value) ? 'a list of' : 'one of'} ${options.map((o) => JSON.stringify(o)).join(', ')} (got ${outside.map((o) => JSON.stringify(o)).join(', ')})`);
    }
  }
  const rules = parameter.validation;
  if (!rules) return problems;
  const [measure, unit] =
    typeof value === 'number' ? [value, ''] : typeof value === 'string' ? [value.length, ' characters'] : Array.isArray(value) ? [value.length, ' items'] : [undefined, ''];
  if (measure !== undefined && rules.min !== undefined && measure < rules.min) {
    problems.push(unit ? `must have at least ${rules.min}${unit} (has ${measure})` : `must be at least ${rules.min} (got ${measure})`);
  }
  if (measure !== undefined && rules.max !== undefined && measure > rules.max) {
    problems.push(unit ? `must have at most ${rules.max}${unit} (has ${measure})` : `must be at most ${rules.max} (got ${measure})`);
  }
  if (rules.regex !== undefined && (typeof value === 'string' || Array.isArray(value))) {
    const pattern = compileRegex(rules.regex);
    const failing = pattern ? items.filter((item) => !pattern.test(String(item))) : [];
    if (failing.length > 0) {
      problems.push(rules.message ? `is invalid: ${rules.message}` : `must match /${rules.regex}/ (got ${failing.map((f) => JSON.stringify(f)).join(', ')})`);
    }
  }
  return problems;
}

function typeMismatch(parameter: ParameterSpec, value: ParameterValue): string | undefined {
  switch (parameter.type) {
    case 'string':
      return typeof value === 'string' ? undefined : 'must be a string';
    case 'number':
      return typeof value === 'number' && Number.isFinite(value) ? undefined : 'must be a number';
    case 'bool':
      return typeof value === 'boolean' ? undefined : 'must be true or false';
    case 'list':
      return Array.isArray(value) && value.every((item) => typeof item === 'string') ? undefined : 'must be a list of strings';
  }
}

/**
 * Regexes run on user-given values, so a pattern that can take exponential time on a crafted
 * value could stall the server. The classic shape is a repeated group whose body is made only of
 * repeated parts (`(a+)+`, `(\w+\s?)*`): every split of the input is a way to match. A group
 * with a fixed part (`(\.\d+)*`) has one split and is fine. A heuristic, not a proof: it
 * catches the shapes people write by accident.
 */
export function hasNestedRepetition(source: string): boolean {
  const repeatedGroup = /\(((?:[^()\\]|\\.)*)\)(?:[+*]|\{\d+,\d*\})/g;
  for (const match of source.matchAll(repeatedGroup)) {
    const body = match[1].replace(/^\?:/, '');
    if (body.includes('|') || body === '') continue;
    const atoms = [...body.matchAll(/(\\.|\[(?:[^\]\\]|\\.)*\]|[^\\[])([+*?]|\{\d+(?:,\d*)?\})?/g)];
    const allRepeated = atoms.length > 0 && atoms.every((atom) => atom[2] !== undefined);
    const someUnbounded = atoms.some((atom) => atom[2] === '+' || atom[2] === '*' || /,\}$/.test(atom[2] ?? ''));
    if (allRepeated && someUnbounded) return true;
  }
  return false;
}

export function compileRegex(source: string): RegExp | undefined {
  try {
    return new RegExp(source);
  } catch {
    return undefined;
  }
}

function checkParameters(parameters: ParameterSpec[]): TemplateCheckIssue[] {
  const issues: TemplateCheckIssue[] = [];
  const seen = new Set<string>();
  parameters.forEach((parameter, index) => {
    const at = (...rest: (string | number)[]) => ['parameters', index, ...rest];
    if (seen.has(parameter.name)) {
      issues.push({ path: at('name'), message: `Parameter '${parameter.name}' is declared twice; give each parameter its own name.` });
    }
    seen.add(parameter.name);
    const rules = parameter.validation;
    if (parameter.type === 'bool' && parameter.options) {
      issues.push({ path: at('options'), message: 'A bool parameter takes no options; remove them.' });
    }
    parameter.options?.forEach((option, optionIndex) => {
      const value = typeof option === 'object' ? option.value : option;
      const expected = parameter.type === 'number' ? 'number' : 'string';
      if (parameter.type !== 'bool' && typeof value !== expected) {
        issues.push({ path: at('options', optionIndex), message: `Options of a ${parameter.type} parameter must be ${expected}s; change ${JSON.stringify(value)}.` });
      }
    });
    if (rules) {
      if (rules.min !== undefined && rules.max !== undefined && rules.min > rules.max) {
        issues.push({ path: at('validation'), message: `validation.min (${rules.min}) is larger than validation.max (${rules.max}); swap them.` });
      }
      if (rules.regex !== undefined) {
        if (parameter.type !== 'string' && parameter.type !== 'list') {
          issues.push({ path: at('validation', 'regex'), message: `Only string and list parameters take a regex; remove it from this ${parameter.type} parameter.` });
        } else if (!compileRegex(rules.regex)) {
          issues.push({ path: at('validation', 'regex'), message: 'The regex is not a valid JavaScript regular expression; fix its syntax.' });
        } else if (hasNestedRepetition(rules.regex)) {
          issues.push({ path: at('validation', 'regex'), message: 'The regex repeats a group that itself repeats (like (a+)+), which can take exponential time; rewrite it without the nested repetition.' });
        }
      }
      if (rules.monotonic !== undefined && parameter.type !== 'number') {
        issues.push({ path: at('validation', 'monotonic'), message: 'Only number parameters can be monotonic; remove monotonic.' });
      }
      if (parameter.type === 'bool' && (rules.min !== undefined || rules.max !== undefined)) {
        issues.push({ path: at('validation'), message: 'A bool parameter takes no min or max; remove them.' });
      }
    }
    if (parameter.ephemeral && parameter.default === undefined) {
      issues.push({ path: at('default'), message: 'An ephemeral parameter needs a default (it is not stored, so later builds fall back to it).' });
    }
    if (parameter.ephemeral && !parameter.mutable) {
      issues.push({ path: at('mutable'), message: 'An ephemeral parameter is set anew on every build, so it cannot be immutable; remove mutable: false.' });
    }
    if (parameter.default !== undefined) {
      for (const problem of parameterValueProblems(parameter, parameter.default)) {
        issues.push({ path: at('default'), message: `The default ${problem}; change the default or the rules.` });
      }
    }
  });
  return issues;
}

function checkWorkspace(spec: TemplateSpec): TemplateCheckIssue[] {
  const issues: TemplateCheckIssue[] = [];
  duplicates(spec.workspace.startup?.map((script) => script.name) ?? []).forEach((index) => {
    issues.push({ path: ['workspace', 'startup', index, 'name'], message: `Startup script '${spec.workspace.startup![index].name}' is declared twice; give each script its own name.` });
  });
  duplicates(spec.workspace.apps?.map((app) => app.name) ?? []).forEach((index) => {
    issues.push({ path: ['workspace', 'apps', index, 'name'], message: `App '${spec.workspace.apps![index].name}' is declared twice; give each app its own name.` });
  });
  const max = shareLevels.indexOf(spec.workspace.maxShare ?? 'owner');
  spec.workspace.apps?.forEach((app, index) => {
    if (shareLevels.indexOf(app.share ?? 'owner') > max) {
      issues.push({ path: ['workspace', 'apps', index, 'share'], message: `App '${app.name}' is shared with '${app.share}', wider than the template's maxShare '${spec.workspace.maxShare ?? 'owner'}'; raise workspace.maxShare or narrow the app's share.` });
    }
  });
  return issues;
}

function checkEnvironment(spec: TemplateSpec): TemplateCheckIssue[] {
  const issues: TemplateCheckIssue[] = [];
  const services = spec.environment?.services ?? {};
  const names = Object.keys(services);
  const known = names.length > 0 ? `the services are: ${names.join(', ')}` : 'the template declares no services';
  for (const [name, service] of Object.entries(services)) {
    const at = (...rest: (string | number)[]) => ['environment', 'services', name, ...rest];
    if (!service.image && !service.command) {
      issues.push({ path: at(), message: `Service '${name}' needs an image or a command (the process runtime runs the command).` });
    }
    if (service.afterSync === 'restart' && !service.command) {
      issues.push({ path: at('afterSync'), message: `Service '${name}' asks for afterSync: restart without a command; den restarts the command it starts, so give the service a command (the one its image would run).` });
    }
    if (service.afterSync === 'restart' && (service.sync?.length ?? 0) === 0) {
      issues.push({ path: at('afterSync'), message: `Service '${name}' asks for afterSync: restart but syncs nothing, so it would never restart; add a sync or remove afterSync.` });
    }
    const ports = service.ports?.map((p) => p.port) ?? [];
    duplicates(ports).forEach((index) => issues.push({ path: at('ports', index, 'port'), message: `Port ${ports[index]} is listed twice; list each port once.` }));
    const portNames = service.ports?.map((p) => p.name).filter((n): n is string => n !== undefined) ?? [];
    duplicates(portNames).forEach(() => issues.push({ path: at('ports'), message: 'Two ports share a name; give each port its own name.' }));
    duplicates(service.volumes?.map((v) => v.name) ?? []).forEach((index) => {
      issues.push({ path: at('volumes', index, 'name'), message: `Volume '${service.volumes![index].name}' is declared twice; give each volume its own name.` });
    });
    const readiness = service.readiness;
    if (readiness) {
      const probes = [readiness.tcp, readiness.http, readiness.command].filter((probe) => probe !== undefined).length;
      if (probes !== 1) {
        issues.push({ path: at('readiness'), message: 'A readiness check needs exactly one of tcp, http or command.' });
      }
      const probed = readiness.tcp ?? readiness.http?.port;
      if (probed !== undefined && !ports.includes(probed)) {
        issues.push({ path: at('readiness', readiness.tcp !== undefined ? 'tcp' : 'http'), message: `Readiness checks port ${probed}, which service '${name}' does not list under ports; add it to ports.` });
      }
    }
    service.dependsOn?.forEach((dependency, index) => {
      if (dependency === name) {
        issues.push({ path: at('dependsOn', index), message: `Service '${name}' cannot depend on itself; remove it from dependsOn.` });
      } else if (!Object.hasOwn(services, dependency)) {
        issues.push({ path: at('dependsOn', index), message: `Service '${name}' depends on '${dependency}', which does not exist; ${known}.` });
      }
    });
    // a service's agent is named after the service; 'main' is the workspace's own agent
    if (service.agent && name === 'main') {
      issues.push({ path: at('agent'), message: "A service named 'main' cannot have an agent: 'main' is the workspace's own agent. Rename the service." });
    }
  }
  // a preview URL is named like an app (docs/apps.md): the names must not meet
  const appNames = new Set(spec.workspace.apps?.map((app) => app.name) ?? []);
  const previewNames = new Set<string>();
  for (const preview of servicePreviews(spec)) {
    const at = ['environment', 'services', preview.service, 'ports'];
    if (appNames.has(preview.name)) {
      issues.push({ path: at, message: `The preview URL of service '${preview.service}' is named '${preview.name}', like an app of workspace.apps; rename the app or the service.` });
    } else if (previewNames.has(preview.name)) {
      issues.push({ path: at, message: `Two preview URLs are named '${preview.name}'; give the previewed ports of service '${preview.service}' names of their own.` });
    } else if (preview.name.length > 32) {
      issues.push({ path: at, message: `The preview URL name '${preview.name}' is longer than 32 characters; shorten the service or port name.` });
    }
    previewNames.add(preview.name);
  }
  const cycle = findCycle(services);
  if (cycle) {
    issues.push({ path: ['environment', 'services', cycle[0], 'dependsOn'], message: `Services depend on each other in a cycle (${cycle.join(' -> ')}); break the cycle.` });
  }
  const tasks = spec.environment?.tasks ?? {};
  const taskNames = Object.keys(tasks);
  const taskCycle = findCycle(tasks);
  if (taskCycle) {
    issues.push({ path: ['environment', 'tasks', taskCycle[0], 'dependsOn'], message: `Tasks depend on each other in a cycle (${taskCycle.join(' -> ')}); break the cycle.` });
  }
  for (const kind of ['tasks', 'tests'] as const) {
    for (const [entry, value] of Object.entries(spec.environment?.[kind] ?? {})) {
      if (!Object.hasOwn(services, value.service)) {
        issues.push({ path: ['environment', kind, entry, 'service'], message: `${kind === 'tasks' ? 'Task' : 'Test'} '${entry}' runs in service '${value.service}', which does not exist; ${known}.` });
      } else if (!value.oneOff && !services[value.service].agent) {
        issues.push({ path: ['environment', kind, entry, 'service'], message: `${kind === 'tasks' ? 'Task' : 'Test'} '${entry}' runs in service '${value.service}', which has no agent to run it; add \`agent: true\` to service '${value.service}', or add \`oneOff: true\` to the ${kind === 'tasks' ? 'task' : 'test'} to run it in a one-off container from the service's image.` });
      }
      value.dependsOn?.forEach((dependency, index) => {
        if (kind === 'tasks' && dependency === entry) {
          issues.push({ path: ['environment', kind, entry, 'dependsOn', index], message: `Task '${entry}' cannot depend on itself; remove it from dependsOn.` });
        } else if (!Object.hasOwn(tasks, dependency)) {
          issues.push({ path: ['environment', kind, entry, 'dependsOn', index], message: `${kind === 'tasks' ? 'Task' : 'Test'} '${entry}' depends on task '${dependency}', which does not exist; ${taskNames.length > 0 ? `the tasks are: ${taskNames.join(', ')}` : 'the template declares no tasks'}.` });
        }
      });
    }
  }
  return issues;
}

function checkPaths(spec: TemplateSpec): TemplateCheckIssue[] {
  const issues: TemplateCheckIssue[] = [];
  for (const { path, value, kind } of templatePaths(spec)) {
    const problem = templatePathProblem(withoutExpressions(value), kind);
    if (problem) issues.push({ path, message: problem });
  }
  return issues;
}

/** Indexes of entries that repeat an earlier entry. */
function duplicates<T>(values: T[]): number[] {
  const seen = new Set<T>();
  const out: number[] = [];
  values.forEach((value, index) => {
    if (seen.has(value)) out.push(index);
    seen.add(value);
  });
  return out;
}

/** The first dependency cycle among services (or tasks), as a path that returns to its start. */
function findCycle(services: Record<string, { dependsOn?: string[] }>): string[] | undefined {
  const state = new Map<string, 'visiting' | 'done'>();
  const stack: string[] = [];
  const visit = (name: string): string[] | undefined => {
    if (state.get(name) === 'done') return undefined;
    if (state.get(name) === 'visiting') return [...stack.slice(stack.indexOf(name)), name];
    state.set(name, 'visiting');
    stack.push(name);
    for (const dependency of services[name]?.dependsOn ?? []) {
      if (dependency === name || !Object.hasOwn(services, dependency)) continue;
      const cycle = visit(dependency);
      if (cycle) return cycle;
    }
    stack.pop();
    state.set(name, 'done');
    return undefined;
  };
  for (const name of Object.keys(services)) {
    const cycle = visit(name);
    if (cycle) return cycle;
  }
  return undefined;
}
