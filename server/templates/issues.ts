import type { z } from 'zod';

/**
 * Turns zod issues about a template into sentences a template author can act on: the field
 * path in the author's notation (`workspace.startup[0].timeout`) and what to write instead.
 * zod's own messages ("Invalid input: expected array, received number") are rewritten; the
 * schema's custom messages are already sentences and pass through.
 */

export interface TemplateProblem {
  path: PropertyKey[];
  /** true when the problem is a key itself (unknown field, bad record key): point at the key */
  atKey: boolean;
  detail: string;
}

type Issue = z.core.$ZodIssue;

/** Fields holding durations: a bare number there is the most common mistake ("timeout: 30"). */
const DURATION_FIELDS = new Set(['timeout', 'interval', 'autostop', 'maxLifetime']);

export function describeIssues(issues: readonly Issue[], schema: z.ZodType, input: unknown): TemplateProblem[] {
  return issues.flatMap((issue) => describeIssue(issue, schema, input));
}

/** `['workspace', 'startup', 0, 'timeout']` -> `workspace.startup[0].timeout` */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const segment of path) {
    if (typeof segment === 'number') out += `[${segment}]`;
    else out += out ? `.${String(segment)}` : String(segment);
  }
  return out || '(template)';
}

function describeIssue(issue: Issue, schema: z.ZodType, input: unknown): TemplateProblem[] {
  const path = [...issue.path];
  switch (issue.code) {
    case 'unrecognized_keys': {
      const known = knownFields(schema, path);
      return issue.keys.map((key) => {
        const guess = closest(key, known);
        const detail = guess
          ? `'${key}' is not a field here; did you mean '${guess}'?`
          : known.length > 0
            ? `'${key}' is not a field here; remove it (the fields here are ${known.join(', ')}).`
            : `'${key}' is not a field here; remove it.`;
        return { path: [...path, key], atKey: true, detail };
      });
    }
    case 'invalid_key': {
      const inner = issue.issues[0];
      return [{ path, atKey: true, detail: inner?.code === 'invalid_format' || inner?.code === 'too_big' || inner?.code === 'custom' ? inner.message : `The name '${String(path.at(-1))}' is not allowed here.` }];
    }
    case 'invalid_type': {
      const value = valueAt(input, path);
      if (value === undefined) return [{ path, atKey: false, detail: `${lastName(path)} is required; add it.` }];
      if (path.at(-2) === 'ports' && typeof value === 'number' && issue.expected === 'object') {
        return [{ path, atKey: false, detail: `Write { port: ${value} } here, not the bare number ${value}.` }];
      }
      const durationField = DURATION_FIELDS.has(String(path.at(-1))) && issue.expected === 'string';
      const wanted = durationField ? 'a duration with a unit, such as 30s, 5m or 2h,' : article(issue.expected);
      return [{ path, atKey: false, detail: `Write ${wanted} here, not ${describeValue(value)}.` }];
    }
    case 'invalid_union': {
      // Prefer the branch that got furthest: one whose problem is not just the wrong type.
      const branches = issue.errors.filter((branch) => branch.length > 0);
      const specific = branches.find((branch) => branch.every((inner) => inner.code !== 'invalid_type' || inner.path.length > 0));
      if (specific) return describeIssues(specific.map((inner) => ({ ...inner, path: [...path, ...inner.path] }) as Issue), schema, input);
      const expected = [...new Set(branches.flatMap((branch) => branch.filter((i) => i.code === 'invalid_type').map((i) => (i as { expected: string }).expected)))];
      return [{ path, atKey: false, detail: `Write ${expected.map(article).join(' or ')} here, not ${describeValue(valueAt(input, path))}.` }];
    }
    case 'invalid_value': {
      const values = issue.values.map((value) => JSON.stringify(value)).join(', ');
      return [{ path, atKey: false, detail: `Use one of ${values} (not ${describeValue(valueAt(input, path))}).` }];
    }
    case 'too_small':
    case 'too_big':
      return [{ path, atKey: false, detail: isZodDefault(issue.message) ? `${rewriteSize(issue)}.` : issue.message }];
    default:
      return [{ path, atKey: false, detail: sentence(issue.message) }];
  }
}

function rewriteSize(issue: Extract<Issue, { code: 'too_small' | 'too_big' }>): string {
  const small = issue.code === 'too_small';
  const bound = small ? issue.minimum : issue.maximum;
  switch (issue.origin) {
    case 'string':
      return small && Number(bound) === 1 ? 'Write a non-empty text here' : `Use ${small ? 'at least' : 'at most'} ${String(bound)} characters`;
    case 'array':
      return `List ${small ? 'at least' : 'at most'} ${String(bound)} item${Number(bound) === 1 ? '' : 's'}`;
    default:
      return `Use a number ${small ? 'of at least' : 'of at most'} ${String(bound)}`;
  }
}

function isZodDefault(message: string): boolean {
  return /^Too (small|big)/.test(message);
}

function sentence(message: string): string {
  const text = message.replace(/^Invalid input: /, '');
  const capital = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?)]$/.test(capital) ? capital : `${capital}.`;
}

function lastName(path: PropertyKey[]): string {
  const last = path.at(-1);
  return last === undefined ? 'This field' : typeof last === 'number' ? `Item ${last}` : `'${String(last)}'`;
}

function article(type: string): string {
  const names: Record<string, string> = { object: 'a mapping (key: value lines)', array: 'a list', string: 'text', number: 'a number', boolean: 'true or false', record: 'a mapping' };
  return names[type] ?? `a ${type}`;
}

function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'an empty value';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return `the text ${JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value)}`;
  if (typeof value === 'boolean') return String(value);
  return `the ${typeof value} ${String(value)}`;
}

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  let current = input;
  for (const segment of path) {
    if (current === null || typeof current !== 'object' || !Object.hasOwn(current, segment)) return undefined;
    current = (current as Record<PropertyKey, unknown>)[segment];
  }
  return current;
}

/** The field names the schema allows at `path` (for "did you mean" and listings). */
export function knownFields(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let current: z.ZodType | undefined = schema;
  for (const segment of path) {
    current = unwrap(current);
    if (!current) return [];
    const def = current._zod.def as unknown as Record<string, unknown> & { type: string };
    if (def.type === 'object') current = (def.shape as Record<string, z.ZodType>)[String(segment)];
    else if (def.type === 'array') current = def.element as z.ZodType;
    else if (def.type === 'record') current = def.valueType as z.ZodType;
    else return [];
  }
  current = unwrap(current);
  const def = current?._zod.def as unknown as { type: string; shape?: Record<string, unknown> } | undefined;
  return def?.type === 'object' && def.shape ? Object.keys(def.shape).filter((key) => key !== '$schema') : [];
}

function unwrap(schema: z.ZodType | undefined): z.ZodType | undefined {
  let current = schema;
  for (let i = 0; current && i < 10; i++) {
    const def = current._zod.def as unknown as { type: string; innerType?: z.ZodType; in?: z.ZodType; options?: z.ZodType[] };
    if (def.innerType) current = def.innerType;
    else if (def.type === 'pipe' && def.in) current = def.in;
    else if (def.type === 'union' && def.options) {
      // A union like "argv array or string": descend into its structured branch.
      current = def.options.find((option) => ['object', 'array', 'record'].includes((option._zod.def as { type: string }).type));
    } else return current;
  }
  return current;
}

/** The known name closest to `key` when it is plausibly a typo (edit distance <= 2). */
function closest(key: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of known) {
    const distance = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2 || a.length > 64 || b.length > 64) return 99;
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = row;
  }
  return previous[b.length];
}
