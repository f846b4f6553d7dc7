import { AppError } from '../../protocol/errors.ts';
import type { ParameterValue } from '../../protocol/template.ts';
import { ExpressionSyntaxError, findExpressions, parseExpression, type ExpressionNode, type ExpressionSegment } from './expression-parser.ts';

export { findExpressions, parseExpression, referencedNames, type ExpressionNode, type ExpressionSegment } from './expression-parser.ts';

/**
 * Evaluates `${{ ... }}` in template values at plan time. Names resolve only through own
 * properties of plain objects and arrays in the scope, so nothing reaches a prototype, a getter
 * of a class instance or a function. Every failure is an AppError EXPRESSION_INVALID naming the
 * field, the expression and, for unknown names, the names that do exist.
 */

/**
 * What expressions can read: the scope the plan builds (server/builds/plan.ts) has this shape,
 * and references.ts checks names against it at push time.
 */
export interface TemplateScope {
  params: Record<string, ParameterValue>;
  workspace: { id: string; name: string; owner: string };
  owner: { id: string; name: string; displayName: string };
  /** per service: where its first port is reachable from the workspace, and every port by number */
  services: Record<string, ServiceScope>;
}

export interface ServiceEndpointScope {
  host: string;
  port: number;
  url: string;
}

export interface ServiceScope extends ServiceEndpointScope {
  ports: Record<string, ServiceEndpointScope>;
}

export type ExpressionValue = string | number | boolean | null | ExpressionValue[] | { [key: string]: ExpressionValue };

/** Results longer than this are refused (a runaway concatenation, not a real value). */
export const MAX_RESULT_LENGTH = 256 * 1024;

/** A scope from plain inputs; service endpoints are keyed by declared port, the first one first. */
export function createTemplateScope(input: {
  params: Record<string, ParameterValue>;
  workspace: { id: string; name: string };
  owner: { id?: string; name: string; displayName?: string };
  services?: Record<string, Record<number, { host: string; port: number; url?: string }>>;
}): TemplateScope {
  const services: TemplateScope['services'] = {};
  for (const [name, byPort] of Object.entries(input.services ?? {})) {
    const ports: Record<string, ServiceEndpointScope> = {};
    for (const [declared, endpoint] of Object.entries(byPort)) {
      ports[declared] = { host: endpoint.host, port: endpoint.port, url: endpoint.url ?? `http://${endpoint.host}:${endpoint.port}` };
    }
    const first = Object.values(ports)[0] ?? { host: '', port: 0, url: '' };
    services[name] = { ...first, ports };
  }
  return {
    params: { ...input.params },
    workspace: { id: input.workspace.id, name: input.workspace.name, owner: input.owner.name },
    owner: { id: input.owner.id ?? '', name: input.owner.name, displayName: input.owner.displayName ?? input.owner.name },
    services,
  };
}

/**
 * Evaluates every `${{ }}` in strings inside `value` (walking arrays and objects; keys are
 * left alone). A string that is exactly one `${{ x }}` becomes x's value with its type (a
 * number stays a number); expressions embedded in text are interpolated as text.
 */
export function evaluateTemplateValue(value: unknown, scope: TemplateScope | Record<string, unknown>, fieldPath: string): unknown {
  if (typeof value === 'string') return evaluateString(value, scope as Record<string, unknown>, fieldPath);
  if (Array.isArray(value)) return value.map((item, index) => evaluateTemplateValue(item, scope, `${fieldPath}[${index}]`));
  if (isPlainObject(value)) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = evaluateTemplateValue(item, scope, fieldPath ? `${fieldPath}.${key}` : key);
    return out;
  }
  return value;
}

/** Evaluates one expression (the text between `${{` and `}}`). */
export function evaluateExpression(source: string, scope: TemplateScope | Record<string, unknown>, fieldPath = 'value'): ExpressionValue {
  let node: ExpressionNode;
  try {
    node = parseExpression(source);
  } catch (error) {
    if (error instanceof ExpressionSyntaxError) throw invalid(fieldPath, source, `${error.message}`);
    throw error;
  }
  return new Evaluator(scope as Record<string, unknown>, source, fieldPath).run(node);
}

/** Whether a string contains an expression at all (cheap check before evaluating). */
export function containsExpression(text: string): boolean {
  return text.includes('${{');
}

function evaluateString(text: string, scope: Record<string, unknown>, fieldPath: string): unknown {
  if (!containsExpression(text)) return text;
  let segments: ExpressionSegment[];
  try {
    segments = findExpressions(text);
  } catch (error) {
    if (error instanceof ExpressionSyntaxError) {
      const problem = error.message;
      throw new AppError('EXPRESSION_INVALID', `The value of ${fieldPath} is invalid: ${problem}. Fix the template and push it again.`, {
        validations: [{ field: fieldPath, detail: problem }],
      });
    }
    throw error;
  }
  if (segments.length === 1 && segments[0].start === 0 && segments[0].end === text.length) {
    const value = evaluateExpression(segments[0].source, scope, fieldPath);
    if (isPlainObject(value)) throw notAValue(fieldPath, segments[0].source, value);
    return value;
  }
  let out = '';
  let last = 0;
  for (const segment of segments) {
    const value = evaluateExpression(segment.source, scope, fieldPath);
    out += text.slice(last, segment.start) + toText(value, fieldPath, segment.source);
    last = segment.end;
    if (out.length > MAX_RESULT_LENGTH) throw invalid(fieldPath, segment.source, `the result is longer than ${MAX_RESULT_LENGTH} characters`);
  }
  return out + text.slice(last);
}

/** The functions expressions may call (for push-time checks and docs). */
export function expressionFunctionNames(): string[] {
  return [...FUNCTIONS.keys()];
}

type Fn = (args: ExpressionValue[], context: { fieldPath: string; source: string }) => ExpressionValue;

// A Map, not an object literal, so `toString(x)` or `constructor(x)` cannot find a prototype member.
const FUNCTIONS = new Map<string, { arity: [number, number]; fn: Fn }>([
  ['lower', { arity: [1, 1], fn: ([x], c) => toText(x, c.fieldPath, c.source).toLowerCase() }],
  ['upper', { arity: [1, 1], fn: ([x], c) => toText(x, c.fieldPath, c.source).toUpperCase() }],
  ['trim', { arity: [1, 1], fn: ([x], c) => toText(x, c.fieldPath, c.source).trim() }],
  ['string', { arity: [1, 1], fn: ([x], c) => toText(x, c.fieldPath, c.source) }],
  ['default', { arity: [2, 2], fn: ([x, fallback]) => (x === null || x === '' ? fallback : x) }],
  ['join', { arity: [1, 2], fn: ([list, sep], c) => {
    if (!Array.isArray(list)) throw invalid(c.fieldPath, c.source, 'join() takes a list as its first argument');
    return list.map((item) => toText(item, c.fieldPath, c.source)).join(sep === undefined ? ',' : toText(sep, c.fieldPath, c.source));
  } }],
  ['contains', { arity: [2, 2], fn: ([haystack, needle], c) => {
    if (Array.isArray(haystack)) return haystack.some((item) => looseEquals(item, needle));
    return toText(haystack, c.fieldPath, c.source).includes(toText(needle, c.fieldPath, c.source));
  } }],
  ['number', { arity: [1, 1], fn: ([x], c) => {
    const n = typeof x === 'number' ? x : Number(toText(x, c.fieldPath, c.source).trim());
    if (!Number.isFinite(n) || (typeof x === 'string' && x.trim() === '')) throw invalid(c.fieldPath, c.source, `number() cannot turn ${JSON.stringify(x)} into a number`);
    return n;
  } }],
]);

class Evaluator {
  private readonly scope: Record<string, unknown>;
  private readonly source: string;
  private readonly fieldPath: string;

  constructor(scope: Record<string, unknown>, source: string, fieldPath: string) {
    this.scope = scope;
    this.source = source;
    this.fieldPath = fieldPath;
  }

  run(node: ExpressionNode): ExpressionValue {
    switch (node.kind) {
      case 'literal':
        return node.value;
      case 'name':
        return this.lookup(node.path);
      case 'not':
        return !truthy(this.run(node.operand));
      case 'conditional':
        return truthy(this.run(node.test)) ? this.run(node.then) : this.run(node.otherwise);
      case 'call':
        return this.call(node.name, node.args);
      case 'binary':
        return this.binary(node.op, node.left, node.right);
    }
  }

  private binary(op: '+' | '==' | '!=' | '&&' | '||', leftNode: ExpressionNode, rightNode: ExpressionNode): ExpressionValue {
    const left = this.run(leftNode);
    if (op === '&&') return truthy(left) ? this.run(rightNode) : left;
    if (op === '||') return truthy(left) ? left : this.run(rightNode);
    const right = this.run(rightNode);
    if (op === '==') return looseEquals(left, right);
    if (op === '!=') return !looseEquals(left, right);
    if (typeof left === 'number' && typeof right === 'number') return left + right;
    const text = toText(left, this.fieldPath, this.source) + toText(right, this.fieldPath, this.source);
    if (text.length > MAX_RESULT_LENGTH) throw invalid(this.fieldPath, this.source, `the result is longer than ${MAX_RESULT_LENGTH} characters`);
    return text;
  }

  private call(name: string, argNodes: ExpressionNode[]): ExpressionValue {
    const entry = FUNCTIONS.get(name);
    if (!entry) {
      throw invalid(this.fieldPath, this.source, `there is no function '${name}'; the functions are ${[...FUNCTIONS.keys()].join(', ')}`);
    }
    const [min, max] = entry.arity;
    if (argNodes.length < min || argNodes.length > max) {
      const expected = min === max ? `${min}` : `${min} or ${max}`;
      throw invalid(this.fieldPath, this.source, `${name}() takes ${expected} argument${max === 1 ? '' : 's'}, not ${argNodes.length}`);
    }
    return entry.fn(argNodes.map((arg) => this.run(arg)), { fieldPath: this.fieldPath, source: this.source });
  }

  private lookup(path: string[]): ExpressionValue {
    let current: unknown = this.scope;
    for (let i = 0; i < path.length; i++) {
      const key = path[i];
      const container = isPlainObject(current) || Array.isArray(current) ? (current as Record<string, unknown>) : undefined;
      const found = container !== undefined && Object.hasOwn(container, key) && (!Array.isArray(container) || /^\d+$/.test(key));
      if (!found) {
        const prefix = path.slice(0, i).join('.');
        const known = container && !Array.isArray(container) ? Object.keys(container).map((k) => (prefix ? `${prefix}.${k}` : k)) : [];
        const where = prefix ? `'${prefix}' has no '${key}'` : `there is no '${key}'`;
        const listing = known.length > 0 ? `; known names here are ${known.join(', ')}` : prefix ? `; '${prefix}' is ${describeValue(current)}` : '';
        throw invalid(this.fieldPath, this.source, `unknown name '${path.join('.')}' (${where}${listing})`);
      }
      current = container[key];
    }
    return toExpressionValue(current, path.join('.'), this.fieldPath, this.source);
  }
}

function toExpressionValue(value: unknown, name: string, fieldPath: string, source: string): ExpressionValue {
  if (value === undefined) return null;
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') return value;
  if (Array.isArray(value) || isPlainObject(value)) return value as ExpressionValue;
  throw invalid(fieldPath, source, `'${name}' is ${describeValue(value)}, which expressions cannot read`);
}

function truthy(value: ExpressionValue): boolean {
  if (Array.isArray(value)) return value.length > 0;
  return value !== null && value !== false && value !== 0 && value !== '';
}

/** Same type: strict equality (lists item by item); number vs string compares the text. */
function looseEquals(left: ExpressionValue, right: ExpressionValue): boolean {
  if (Array.isArray(left) && Array.isArray(right)) {
    return left.length === right.length && left.every((item, index) => looseEquals(item, right[index]));
  }
  if (typeof left === 'number' && typeof right === 'string') return String(left) === right;
  if (typeof left === 'string' && typeof right === 'number') return left === String(right);
  return left === right;
}

function toText(value: ExpressionValue, fieldPath: string, source: string): string {
  if (value === null) return '';
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return value.map((item) => toText(item, fieldPath, source)).join(',');
  throw notAValue(fieldPath, source, value);
}

function notAValue(fieldPath: string, source: string, value: Record<string, unknown>): AppError {
  const fields = Object.keys(value);
  return invalid(fieldPath, source, `it names a group of values, not a value${fields.length ? `; pick one of its fields: ${fields.join(', ')}` : ''}`);
}

function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'empty';
  if (Array.isArray(value)) return 'a list';
  return `a ${typeof value}`;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function invalid(fieldPath: string, source: string, problem: string): AppError {
  const shown = source.length > 200 ? `${source.slice(0, 200)}...` : source;
  return new AppError(
    'EXPRESSION_INVALID',
    `The expression \`\${{${shown}}}\` in ${fieldPath} is invalid: ${problem}. Fix the template and push it again.`,
    { validations: [{ field: fieldPath, detail: problem }] },
  );
}
