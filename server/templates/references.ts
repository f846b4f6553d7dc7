import type { TemplateSpec } from '../../protocol/template.ts';
import { ExpressionSyntaxError } from './expression-parser.ts';
import { expressionFunctionNames, findExpressions, parseExpression, referencedNames, type ExpressionNode } from './expressions.ts';

/**
 * Push-time checks of every `${{ }}` in a template: syntax, function names, and names that the
 * plan's scope will have (declared parameters and services, the workspace and owner fields).
 * Catching `params.cpux` at push points the author at the line; at plan time it would fail a
 * user's build instead. Keep the scope fields in step with the plan (server/builds/plan.ts).
 */

/** The fields of the scope the plan builds, by root name. */
export const SCOPE_FIELDS = {
  workspace: ['id', 'name', 'owner'],
  owner: ['id', 'name', 'displayName'],
  service: ['url', 'host', 'port', 'ports'],
  servicePort: ['url', 'host', 'port'],
} as const;

export interface ExpressionProblem {
  path: (string | number)[];
  detail: string;
}

/** Problems with the expressions in the parts of the template the plan evaluates. */
export function checkExpressions(spec: TemplateSpec): ExpressionProblem[] {
  const problems: ExpressionProblem[] = [];
  const names = new Names(spec);
  const visit = (value: unknown, path: (string | number)[]) => {
    if (typeof value === 'string') {
      for (const detail of checkString(value, names)) problems.push({ path, detail });
    } else if (Array.isArray(value)) {
      value.forEach((item, index) => visit(item, [...path, index]));
    } else if (value !== null && typeof value === 'object') {
      for (const [key, item] of Object.entries(value)) visit(item, [...path, key]);
    }
  };
  visit(spec.workspace, ['workspace']);
  if (spec.environment) visit(spec.environment, ['environment']);
  return problems;
}

function checkString(text: string, names: Names): string[] {
  if (!text.includes('${{')) return [];
  let segments;
  try {
    segments = findExpressions(text);
  } catch (error) {
    if (error instanceof ExpressionSyntaxError) return [`${capitalize(error.message)}; close it with '}}'.`];
    throw error;
  }
  const problems: string[] = [];
  for (const segment of segments) {
    const shown = `\`\${{${segment.source.length > 80 ? `${segment.source.slice(0, 80)}...` : segment.source}}}\``;
    let node: ExpressionNode;
    try {
      node = parseExpression(segment.source);
    } catch (error) {
      if (error instanceof ExpressionSyntaxError) {
        problems.push(`The expression ${shown} is invalid: ${error.message}.`);
        continue;
      }
      throw error;
    }
    for (const name of calledFunctions(node)) {
      if (!expressionFunctionNames().includes(name)) {
        problems.push(`The expression ${shown} calls '${name}', which does not exist; the functions are ${expressionFunctionNames().join(', ')}.`);
      }
    }
    for (const path of referencedNames(node)) {
      const problem = names.check(path);
      if (problem) problems.push(`The expression ${shown} uses '${path.join('.')}': ${problem}.`);
    }
  }
  return problems;
}

class Names {
  private readonly params: Map<string, string>;
  private readonly services: Map<string, string[]>;

  constructor(spec: TemplateSpec) {
    this.params = new Map(spec.parameters.map((p) => [p.name, p.type]));
    this.services = new Map(Object.entries(spec.environment?.services ?? {}).map(([name, s]) => [name, (s.ports ?? []).map((p) => String(p.port))]));
  }

  /** Why `path` will not resolve (or resolves to a group, not a value); undefined when fine. */
  check(path: string[]): string | undefined {
    const [root, second, third, fourth, fifth, ...rest] = path;
    const roots = ['params', 'workspace', 'owner', 'services'];
    if (!roots.includes(root)) return `there is no '${root}'; names start with ${roots.join(', ')}`;
    if (second === undefined) return `'${root}' is a group; pick a field such as ${this.example(root)}`;
    if (root === 'params') {
      const type = this.params.get(second);
      if (!type) return `the template has no parameter '${second}'${this.listing('parameters', [...this.params.keys()])}`;
      if (third !== undefined && !(type === 'list' && /^\d+$/.test(third) && fourth === undefined)) return `'params.${second}' is a ${type} and has no field '${third}'`;
      return undefined;
    }
    if (root === 'workspace' || root === 'owner') {
      const fields: readonly string[] = SCOPE_FIELDS[root];
      if (!fields.includes(second)) return `'${root}' has no '${second}'; its fields are ${fields.join(', ')}`;
      return third === undefined ? undefined : `'${root}.${second}' has no field '${third}'`;
    }
    const ports = this.services.get(second);
    if (!ports) return `the template has no service '${second}'${this.listing('services', [...this.services.keys()])}`;
    if (third === undefined) return `'services.${second}' is a group; pick url, host or port`;
    if (!(SCOPE_FIELDS.service as readonly string[]).includes(third)) return `'services.${second}' has no '${third}'; its fields are ${SCOPE_FIELDS.service.join(', ')}`;
    if (ports.length === 0) return `service '${second}' lists no ports, so it has no ${third}; add ports to it`;
    if (third !== 'ports') return fourth === undefined ? undefined : `'services.${second}.${third}' has no field '${fourth}'`;
    if (fourth === undefined || !ports.includes(fourth)) return `service '${second}' has no port '${fourth ?? ''}'; its ports are ${ports.join(', ')} (for example services.${second}.ports.${ports[0]}.url)`;
    if (fifth === undefined || !(SCOPE_FIELDS.servicePort as readonly string[]).includes(fifth) || rest.length > 0) {
      return `pick url, host or port of services.${second}.ports.${fourth}`;
    }
    return undefined;
  }

  private example(root: string): string {
    if (root === 'params') return this.params.size > 0 ? `params.${[...this.params.keys()][0]}` : 'params.<name> (declare parameters first)';
    if (root === 'services') return this.services.size > 0 ? `services.${[...this.services.keys()][0]}.url` : 'services.<name>.url (declare services first)';
    return `${root}.name`;
  }

  private listing(what: string, names: string[]): string {
    return names.length > 0 ? `; the ${what} are ${names.join(', ')}` : `; it declares no ${what}`;
  }
}

function calledFunctions(node: ExpressionNode): string[] {
  switch (node.kind) {
    case 'call':
      return [node.name, ...node.args.flatMap(calledFunctions)];
    case 'not':
      return calledFunctions(node.operand);
    case 'binary':
      return [...calledFunctions(node.left), ...calledFunctions(node.right)];
    case 'conditional':
      return [...calledFunctions(node.test), ...calledFunctions(node.then), ...calledFunctions(node.otherwise)];
    default:
      return [];
  }
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}
