import { AppError, type ValidationIssue } from '../../protocol/errors.ts';
import type { ParameterSpec, ParameterValue, TemplateSpec } from '../../protocol/template.ts';
import { parameterValueProblems } from '../../protocol/template-checks.ts';

/**
 * Parameter values for a workspace build: what the user gave (JSON values, or strings from
 * `den create --param cpu=2`), coerced to the declared types, with defaults and the previous
 * build's values filled in, checked against the template version's rules. Every violation is
 * collected, so the user fixes them all in one go.
 */

export type ParameterValues = Record<string, ParameterValue>;

/** Longer values are refused: parameters are settings, not documents (and regexes run on them). */
export const MAX_PARAMETER_TEXT = 10_000;
const MAX_LIST_ITEMS = 1000;

/**
 * Resolves the parameters of a build. `previous` is the stored values of the workspace when
 * updating or restarting (absent at create): values not given are kept from it, immutable
 * ones may not change, and monotonic ones may only move one way. Throws AppError
 * WORKSPACE_PARAMETERS_INVALID with one validation per problem.
 */
export function resolveParameters(
  spec: Pick<TemplateSpec, 'parameters'>,
  given: Record<string, unknown>,
  previous?: Record<string, unknown>,
): ParameterValues {
  const issues: ValidationIssue[] = [];
  const declared = new Map(spec.parameters.map((parameter) => [parameter.name, parameter]));
  const problem = (name: string, detail: string) => issues.push({ field: `params.${name}`, detail });

  for (const name of Object.keys(given)) {
    if (!declared.has(name)) {
      const names = [...declared.keys()];
      problem(name, `is not a parameter of this template; ${names.length > 0 ? `its parameters are ${names.join(', ')}` : 'it has no parameters'}`);
    }
  }

  const values: ParameterValues = {};
  for (const parameter of spec.parameters) {
    const { name } = parameter;
    const isGiven = Object.hasOwn(given, name) && given[name] !== undefined;
    const before = previous && !parameter.ephemeral && Object.hasOwn(previous, name) ? previous[name] : undefined;
    const raw = isGiven ? given[name] : before !== undefined ? before : parameter.default;
    if (raw === undefined) {
      problem(name, `is required; give it with --param ${name}=<${parameter.type}>`);
      continue;
    }
    const coerced = coerceParameterValue(parameter, raw);
    if ('problem' in coerced) {
      problem(name, isGiven ? coerced.problem : `${coerced.problem} (the stored value no longer fits this template version; give a new value)`);
      continue;
    }
    const value = coerced.value;
    const tooLong = (Array.isArray(value) ? value : [value]).some((item) => typeof item === 'string' && item.length > MAX_PARAMETER_TEXT);
    if (tooLong || (Array.isArray(value) && value.length > MAX_LIST_ITEMS)) {
      problem(name, `is too long; use at most ${MAX_PARAMETER_TEXT} characters${Array.isArray(value) ? ` per item and ${MAX_LIST_ITEMS} items` : ''}`);
      continue;
    }
    for (const rule of parameterValueProblems(parameter, value)) problem(name, rule);

    if (before !== undefined && isGiven) {
      const old = coerceParameterValue(parameter, before);
      if ('value' in old && !sameValue(old.value, value)) {
        if (!parameter.mutable) {
          problem(name, `cannot change after the workspace is created (it is ${JSON.stringify(old.value)}); leave it out or create a new workspace`);
        }
        const direction = parameter.validation?.monotonic;
        if (direction && typeof old.value === 'number' && typeof value === 'number') {
          if (direction === 'increasing' && value < old.value) problem(name, `can only increase; it is ${old.value} now, so use ${old.value} or more`);
          if (direction === 'decreasing' && value > old.value) problem(name, `can only decrease; it is ${old.value} now, so use ${old.value} or less`);
        }
      }
    }
    values[name] = value;
  }

  if (issues.length > 0) {
    const sentences = issues.map((issue) => `${issue.field} ${issue.detail}`);
    throw new AppError(
      'WORKSPACE_PARAMETERS_INVALID',
      `The parameters are invalid: ${sentences.join('; ')}. Fix ${issues.length === 1 ? 'it' : 'them'} and try again.`,
      { validations: issues },
    );
  }
  return values;
}

/** The values to store with a workspace: ephemeral parameters apply to one build only. */
export function withoutEphemeral<T>(spec: Pick<TemplateSpec, 'parameters'>, values: Record<string, T>): Record<string, T> {
  const ephemeral = new Set(spec.parameters.filter((p) => p.ephemeral).map((p) => p.name));
  return Object.fromEntries(Object.entries(values).filter(([name]) => !ephemeral.has(name)));
}

/**
 * Turns a given value into the parameter's type. Strings (from the CLI) are parsed: numbers,
 * true/false/yes/no/1/0, and lists as a JSON array or comma-separated text.
 */
export function coerceParameterValue(parameter: ParameterSpec, raw: unknown): { value: ParameterValue } | { problem: string } {
  const got = ` (got ${describe(raw)})`;
  switch (parameter.type) {
    case 'string':
      if (typeof raw === 'string') return { value: raw };
      if (typeof raw === 'number' || typeof raw === 'boolean') return { value: String(raw) };
      return { problem: `must be a string${got}` };
    case 'number': {
      if (typeof raw === 'number' && Number.isFinite(raw)) return { value: raw };
      if (typeof raw === 'string' && raw.trim() !== '') {
        const n = Number(raw.trim());
        if (Number.isFinite(n)) return { value: n };
      }
      return { problem: `must be a number${got}` };
    }
    case 'bool': {
      if (typeof raw === 'boolean') return { value: raw };
      const text = String(raw).trim().toLowerCase();
      if (typeof raw === 'string' || typeof raw === 'number') {
        if (['true', 'yes', 'on', '1'].includes(text)) return { value: true };
        if (['false', 'no', 'off', '0'].includes(text)) return { value: false };
      }
      return { problem: `must be true or false${got}` };
    }
    case 'list': {
      let items: unknown = raw;
      if (typeof raw === 'string') {
        const text = raw.trim();
        if (text.startsWith('[')) {
          try {
            items = JSON.parse(text);
          } catch {
            return { problem: `must be a list: a JSON array or comma-separated text${got}` };
          }
        } else {
          items = text === '' ? [] : text.split(',').map((item) => item.trim()).filter((item) => item !== '');
        }
      }
      if (Array.isArray(items) && items.every((item) => ['string', 'number', 'boolean'].includes(typeof item))) {
        return { value: items.map((item) => String(item)) };
      }
      return { problem: `must be a list of strings${got}` };
    }
  }
}

function sameValue(a: ParameterValue, b: ParameterValue): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((item, index) => item === b[index]);
  return a === b;
}

function describe(raw: unknown): string {
  if (raw === null) return 'null';
  if (Array.isArray(raw)) return 'a list';
  if (typeof raw === 'object') return 'an object';
  const text = JSON.stringify(raw) ?? String(raw);
  return text.length > 60 ? `${text.slice(0, 60)}...` : text;
}
