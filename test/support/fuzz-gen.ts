import fc from 'fast-check';
import { stringify } from 'yaml';

/**
 * fast-check arbitraries for the fuzz tests of templates, expressions and request bodies: hostile
 * strings and JSON, mutations of JSON-like trees and of YAML text, alias bombs, and values shaped
 * by an OpenAPI schema. A mutation is data (what to change, where, into what) applied by a pure
 * function, so fast-check can shrink a failing case to the smallest mutation that still fails.
 */

const NASTY_STRINGS = [
  '', ' ', '\u0000', '\uFFFF', '\uD800', '😀', 'é', '__proto__', 'constructor', 'prototype', 'toString',
  '${{', '}}', '${{ }}', '${{ params.__proto__ }}', '${{ constructor }}', "${{ '}} ${{' }}", '${{ (((((1))))) }}',
  '*a', '&a', '!!binary', '<<', '%YAML 1.1', '---', '...', '- ', ': ', '#', '"', "'", '\\', '\n', '\t', '\r\n',
  '0x10', '1e999', '-0', 'NaN', '.inf', 'yes', 'no', '~', 'null', 'true', '1Gi', '30s', '500m', '../..', '/etc/passwd',
  'a'.repeat(300), 'DNS-name', 'UPPER', 'a_b', 'x.y',
];

/** Keys that schemas of den use, so random objects often hit real fields. */
export const KEYS = [
  'name', 'displayName', 'description', 'icon', 'parameters', 'workspace', 'environment', 'lifecycle', 'type', 'default',
  'options', 'validation', 'min', 'max', 'regex', 'monotonic', 'mutable', 'ephemeral', 'image', 'resources', 'cpu', 'memory',
  'home', 'size', 'env', 'startup', 'run', 'timeout', 'blocking', 'apps', 'port', 'path', 'share', 'services', 'command',
  'ports', 'readiness', 'tcp', 'http', 'dependsOn', 'volumes', 'sync', 'tasks', 'tests', 'service', 'files', 'message',
  'activate', 'version', 'template', 'params', 'username', 'password', 'role', 'token', 'owner',
];

export const nastyString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(...NASTY_STRINGS),
  fc.stringMatching(/^[a-z]{0,12}$/),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom(0, 1, 63, 64, 255, 4096, 70_000).map((length) => 'x'.repeat(length)),
  fc.tuple(fc.constantFrom(...NASTY_STRINGS), fc.nat(999), fc.constantFrom(...NASTY_STRINGS)).map(([a, n, b]) => `${a}${n}${b}`),
);

const nastyNumber = fc.constantFrom(0, -1, 1, 2, 1.5, 65535, 65536, 2 ** 31, 2 ** 53 + 1, -1e308, 1e308, Number.MIN_VALUE);

/** JSON values of bounded depth built from hostile strings, numbers and schema keys. */
export function hostileJson(maxDepth = 3): fc.Arbitrary<unknown> {
  return fc.letrec<{ value: unknown; object: Record<string, unknown>; array: unknown[] }>((tie) => ({
    value: fc.oneof({ maxDepth, depthIdentifier: 'hostile-json' }, fc.constant(null), fc.boolean(), nastyNumber, fc.nat(99), nastyString, tie('object'), tie('array')),
    object: fc.dictionary(fc.oneof(nastyString, fc.constantFrom(...KEYS)), tie('value'), { maxKeys: 5 }),
    array: fc.array(tie('value'), { maxLength: 4 }),
  })).value;
}

/** One change to a JSON-like tree: where (an index over its slots) and what. */
interface TreeMutation {
  at: number;
  op: 'delete' | 'replace' | 'add-key' | 'nest' | 'constant' | 'retype';
  value: unknown;
  key: string;
  nesting: boolean[];
  constant: unknown;
}

const treeMutation: fc.Arbitrary<TreeMutation> = fc.record({
  at: fc.nat(),
  op: fc.constantFrom('delete', 'replace', 'add-key', 'nest', 'constant', 'retype'),
  value: hostileJson(2),
  key: fc.tuple(fc.constantFrom(...KEYS), fc.boolean()).map(([key, odd]) => (odd ? `${key}x` : key)),
  nesting: fc.array(fc.boolean(), { maxLength: 25 }),
  constant: fc.constantFrom<unknown>([], {}, null, '', 0, true, '${{ params.nope }}', '1Gi', 'x'.repeat(20_000)),
});

/** `base` with one to three mutations at random slots. */
export function mutatedTree(base: fc.Arbitrary<unknown>): fc.Arbitrary<unknown> {
  return fc.tuple(base, fc.array(treeMutation, { minLength: 1, maxLength: 3 })).map(([root, mutations]) =>
    mutations.reduce((tree, mutation) => applyTreeMutation(tree, mutation), structuredClone(root)),
  );
}

function applyTreeMutation(root: unknown, mutation: TreeMutation): unknown {
  const slots: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
  const collect = (value: unknown) => {
    if (Array.isArray(value)) value.forEach((item, index) => { slots.push({ parent: value, key: index }); collect(item); });
    else if (value !== null && typeof value === 'object') {
      for (const [key, item] of Object.entries(value)) { slots.push({ parent: value as Record<string, unknown>, key }); collect(item); }
    }
  };
  collect(root);
  if (slots.length === 0) return mutation.value;
  const { parent, key } = slots[mutation.at % slots.length];
  const slot = parent as Record<string | number, unknown>;
  switch (mutation.op) {
    case 'delete':
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete slot[key];
      break;
    case 'replace':
      slot[key] = mutation.value;
      break;
    case 'add-key':
      if (!Array.isArray(parent)) slot[mutation.key] = mutation.value;
      break;
    case 'nest':
      slot[key] = mutation.nesting.reduce<unknown>((nested, asArray) => (asArray ? [nested] : { [mutation.key]: nested }), slot[key]);
      break;
    case 'constant':
      slot[key] = mutation.constant;
      break;
    case 'retype':
      // JSON, not String(): a value such as { toString: null } throws when made a string
      slot[key] = typeof slot[key] === 'string' ? Number(slot[key]) || [slot[key]] : (JSON.stringify(slot[key]) ?? 'undefined');
  }
  return root;
}

/** One line-level or byte-level change to YAML text. */
interface YamlMutation {
  op: 'delete-line' | 'duplicate-line' | 'swap-lines' | 'indent' | 'insert-bytes' | 'replace-value' | 'deep-flow' | 'alias-bomb' | 'truncate' | 'json';
  a: number;
  b: number;
  flag: boolean;
  bytes: string;
  replacement: string;
  depth: number;
  bomb: string;
  json: unknown;
}

const yamlMutation: fc.Arbitrary<YamlMutation> = fc.record({
  op: fc.constantFrom('delete-line', 'duplicate-line', 'swap-lines', 'indent', 'insert-bytes', 'replace-value', 'deep-flow', 'alias-bomb', 'truncate', 'json'),
  a: fc.nat(),
  b: fc.nat(),
  flag: fc.boolean(),
  bytes: fc.string({ unit: 'binary', minLength: 1, maxLength: 8 }),
  replacement: fc.constantFrom('[', '{', '[]', '{}', '~', '*nope', '&a x', '!!int x', '"unterminated', '|', '>-', '- x', 'a: b: c', '${{ x }}', `"${'y'.repeat(5000)}"`),
  depth: fc.constantFrom(10, 100, 1000, 5000),
  bomb: aliasBomb(),
  json: hostileJson(4),
});

/** A document of `corpus` with one to three line-level or byte-level mutations. */
export function mutatedYaml(corpus: string[]): fc.Arbitrary<string> {
  return fc.tuple(fc.constantFrom(...corpus), fc.array(yamlMutation, { minLength: 1, maxLength: 3 })).map(([text, mutations]) => mutations.reduce(applyYamlMutation, text));
}

function applyYamlMutation(text: string, mutation: YamlMutation): string {
  const lines = text.split('\n');
  const i = mutation.a % lines.length;
  const j = mutation.b % lines.length;
  switch (mutation.op) {
    case 'delete-line':
      lines.splice(i, 1);
      break;
    case 'duplicate-line':
      lines.splice(i, 0, lines[i]);
      break;
    case 'swap-lines':
      [lines[i], lines[j]] = [lines[j], lines[i]];
      break;
    case 'indent':
      lines[i] = mutation.flag ? `  ${lines[i]}` : lines[i].replace(/^ {1,2}/, '');
      break;
    case 'insert-bytes': {
      const position = mutation.a % (text.length + 1);
      return text.slice(0, position) + mutation.bytes + text.slice(position);
    }
    case 'replace-value':
      lines[i] = lines[i].replace(/:\s.*$/, `: ${mutation.replacement}`);
      break;
    case 'deep-flow':
      lines.splice(i, 0, `deep: ${'['.repeat(mutation.depth)}${']'.repeat(mutation.flag ? mutation.depth : 0)}`);
      break;
    case 'alias-bomb':
      return mutation.bomb;
    case 'truncate':
      return text.slice(0, mutation.a % (text.length + 1));
    case 'json':
      return stringify(mutation.json);
  }
  return lines.join('\n');
}

/** A billion-laughs document: each level's anchor lists the previous one `width` times. */
export function aliasBomb(): fc.Arbitrary<string> {
  return fc.record({ width: fc.integer({ min: 5, max: 14 }), levels: fc.integer({ min: 3, max: 10 }) }).map(({ width, levels }) => {
    const out = [`a0: &a0 [${Array(width).fill('"lol"').join(',')}]`];
    for (let i = 1; i < levels; i++) out.push(`a${i}: &a${i} [${Array(width).fill(`*a${i - 1}`).join(',')}]`);
    return `${out.join('\n')}\nname: bomb\nworkspace: { image: x, env: { A: *a${levels - 1} } }\n`;
  });
}

export type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  additionalProperties?: boolean | JsonSchema;
  items?: JsonSchema;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  minimum?: number;
  maximum?: number;
  default?: unknown;
};

/**
 * Values shaped like `schema` (an OpenAPI request body schema), so requests get past validation
 * and reach the domain code; random where the schema leaves room.
 */
export function valueForSchema(schema: JsonSchema | undefined, depth = 0): fc.Arbitrary<unknown> {
  if (!schema || depth > 6) return hostileJson(1);
  if (schema.const !== undefined) return fc.constant(schema.const);
  if (schema.enum) return fc.constantFrom(...schema.enum);
  const choices = schema.anyOf ?? schema.oneOf;
  if (choices) return fc.oneof(...choices.map((choice) => valueForSchema(choice, depth + 1)));
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  return fc.oneof(...types.map((type) => valueForType(schema, type, depth)));
}

function valueForType(schema: JsonSchema, type: string | undefined, depth: number): fc.Arbitrary<unknown> {
  switch (type) {
    case 'object': {
      const properties = Object.entries(schema.properties ?? {});
      const required = properties.filter(([key]) => schema.required?.includes(key)).map(([key]) => key);
      const known = fc.record(Object.fromEntries(properties.map(([key, property]) => [key, valueForSchema(property, depth + 1)])), { requiredKeys: required });
      if (!schema.additionalProperties || typeof schema.additionalProperties !== 'object') return known;
      const extra = fc.dictionary(fc.oneof(fc.constantFrom(...KEYS), nastyString.map((key) => key.slice(0, 40))), valueForSchema(schema.additionalProperties, depth + 1), { maxKeys: 2 });
      return fc.tuple(known, extra).map(([a, b]) => ({ ...b, ...a }));
    }
    case 'array':
      return fc.array(valueForSchema(schema.items, depth + 1), { maxLength: 3 });
    case 'integer':
    case 'number': {
      const min = schema.minimum ?? -5;
      const max = Math.min(schema.maximum ?? 1000, min + 1000);
      return type === 'integer' ? fc.integer({ min: Math.ceil(min), max: Math.floor(max) }) : fc.double({ min, max, noNaN: true });
    }
    case 'boolean':
      return fc.boolean();
    case 'string':
      return fc.oneof(fc.constantFrom('demo', 'owner', 'starter', 'member', 'admin', 'x', 'main', 'correct-horse-battery'), nastyString);
    case 'null':
      return fc.constant(null);
    default:
      return hostileJson(2);
  }
}
