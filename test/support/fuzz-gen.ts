import { stringify } from 'yaml';

/**
 * Seeded generators for the fuzz test: a PRNG (so a failure reproduces from its seed), random
 * JSON values, and mutations of YAML text and of JSON-like trees.
 */

export interface Random {
  seed: number;
  next(): number;
  int(max: number): number;
  pick<T>(items: readonly T[]): T;
  chance(p: number): boolean;
}

/** mulberry32: tiny, fast, and good enough to spread inputs. */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    seed,
    next,
    int: (max) => Math.floor(next() * max),
    pick: (items) => items[Math.floor(next() * items.length)],
    chance: (p) => next() < p,
  };
}

const NASTY_STRINGS = [
  '', ' ', '\u0000', '\uFFFF', '\uD800', '😀', 'é', '__proto__', 'constructor', 'prototype', 'toString',
  '${{', '}}', '${{ }}', '${{ params.__proto__ }}', '${{ constructor }}', "${{ '}} ${{' }}", '${{ (((((1))))) }}',
  '*a', '&a', '!!binary', '<<', '%YAML 1.1', '---', '...', '- ', ': ', '#', '"', "'", '\\', '\n', '\t', '\r\n',
  '0x10', '1e999', '-0', 'NaN', '.inf', 'yes', 'no', '~', 'null', 'true', '1Gi', '30s', '500m', '../..', '/etc/passwd',
  'a'.repeat(300), 'DNS-name', 'UPPER', 'a_b', 'x.y',
];

export function randomString(random: Random): string {
  switch (random.int(5)) {
    case 0:
      return random.pick(NASTY_STRINGS);
    case 1:
      return Array.from({ length: random.int(12) }, () => String.fromCharCode(97 + random.int(26))).join('');
    case 2:
      return Array.from({ length: random.int(20) }, () => String.fromCharCode(random.int(0x3000))).join('');
    case 3:
      return 'x'.repeat(random.pick([0, 1, 63, 64, 255, 4096, 70_000]));
    default:
      return `${random.pick(NASTY_STRINGS)}${random.int(1000)}${random.pick(NASTY_STRINGS)}`;
  }
}

/** A random JSON value of bounded depth and size. */
export function randomJson(random: Random, depth = 4): unknown {
  const kind = random.int(depth > 0 ? 9 : 6);
  switch (kind) {
    case 0: return null;
    case 1: return random.chance(0.5);
    case 2: return random.pick([0, -1, 1, 2, 1.5, 65535, 65536, 2 ** 31, 2 ** 53 + 1, -1e308, 1e308, Number.MIN_VALUE]);
    case 3: return random.int(100);
    case 4:
    case 5: return randomString(random);
    case 6:
    case 7: {
      const out: Record<string, unknown> = {};
      for (let i = random.int(6); i > 0; i--) out[random.chance(0.5) ? randomString(random) : random.pick(KEYS)] = randomJson(random, depth - 1);
      return out;
    }
    default:
      return Array.from({ length: random.int(5) }, () => randomJson(random, depth - 1));
  }
}

const KEYS = [
  'name', 'displayName', 'description', 'icon', 'parameters', 'workspace', 'environment', 'lifecycle', 'type', 'default',
  'options', 'validation', 'min', 'max', 'regex', 'monotonic', 'mutable', 'ephemeral', 'image', 'resources', 'cpu', 'memory',
  'home', 'size', 'env', 'startup', 'run', 'timeout', 'blocking', 'apps', 'port', 'path', 'share', 'services', 'command',
  'ports', 'readiness', 'tcp', 'http', 'dependsOn', 'volumes', 'sync', 'tasks', 'tests', 'service', 'files', 'message',
  'activate', 'version', 'template', 'params', 'username', 'password', 'role', 'token', 'owner',
];

/** Mutates a JSON-like tree in place at a random spot: delete, retype, add unknown keys, nest. */
export function mutateTree(random: Random, root: unknown): unknown {
  const containers: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
  const collect = (value: unknown) => {
    if (Array.isArray(value)) value.forEach((item, index) => { containers.push({ parent: value, key: index }); collect(item); });
    else if (value !== null && typeof value === 'object') {
      for (const [key, item] of Object.entries(value)) { containers.push({ parent: value as Record<string, unknown>, key }); collect(item); }
    }
  };
  collect(root);
  if (containers.length === 0) return randomJson(random);
  const { parent, key } = random.pick(containers);
  const slot = parent as Record<string | number, unknown>;
  switch (random.int(6)) {
    case 0:
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete slot[key];
      break;
    case 1:
      slot[key] = randomJson(random, 2);
      break;
    case 2:
      if (!Array.isArray(parent)) slot[random.pick(KEYS) + (random.chance(0.5) ? '' : 'x')] = randomJson(random, 1);
      break;
    case 3: {
      let nested: unknown = slot[key];
      for (let i = random.int(25); i > 0; i--) nested = random.chance(0.5) ? [nested] : { [random.pick(KEYS)]: nested };
      slot[key] = nested;
      break;
    }
    case 4:
      slot[key] = random.pick([[], {}, null, '', 0, true, '${{ params.nope }}', '1Gi', 'x'.repeat(20_000)]);
      break;
    default:
      slot[key] = typeof slot[key] === 'string' ? Number(slot[key]) || [slot[key]] : String(slot[key]);
  }
  return root;
}

/** Line-level and byte-level mutations of YAML text. */
export function mutateYaml(random: Random, text: string): string {
  const lines = text.split('\n');
  const at = () => random.int(lines.length);
  switch (random.int(10)) {
    case 0:
      lines.splice(at(), 1);
      return lines.join('\n');
    case 1: {
      const i = at();
      lines.splice(i, 0, lines[i]);
      return lines.join('\n');
    }
    case 2: {
      const [a, b] = [at(), at()];
      [lines[a], lines[b]] = [lines[b], lines[a]];
      return lines.join('\n');
    }
    case 3: {
      const i = at();
      lines[i] = random.chance(0.5) ? `  ${lines[i]}` : lines[i].replace(/^ {1,2}/, '');
      return lines.join('\n');
    }
    case 4: {
      const position = random.int(text.length + 1);
      const bytes = Array.from({ length: 1 + random.int(8) }, () => String.fromCharCode(random.int(256))).join('');
      return text.slice(0, position) + bytes + text.slice(position);
    }
    case 5: {
      const i = at();
      lines[i] = lines[i].replace(/:\s.*$/, `: ${random.pick(['[', '{', '[]', '{}', '~', '*nope', '&a x', '!!int x', '"unterminated', '|', '>-', '- x', 'a: b: c', '${{ x }}', `"${'y'.repeat(5000)}"`])}`);
      return lines.join('\n');
    }
    case 6: {
      const depth = random.pick([10, 100, 1000, 5000]);
      const i = at();
      lines.splice(i, 0, `deep: ${'['.repeat(depth)}${']'.repeat(random.chance(0.5) ? depth : 0)}`);
      return lines.join('\n');
    }
    case 7:
      return aliasBomb(random);
    case 8:
      return text.slice(0, random.int(text.length));
    default:
      return stringify(randomJson(random, 5));
  }
}

export function aliasBomb(random: Random): string {
  const width = 5 + random.int(10);
  const out = [`a0: &a0 [${Array(width).fill('"lol"').join(',')}]`];
  const levels = 3 + random.int(8);
  for (let i = 1; i < levels; i++) out.push(`a${i}: &a${i} [${Array(width).fill(`*a${i - 1}`).join(',')}]`);
  return `${out.join('\n')}\nname: bomb\nworkspace: { image: x, env: { A: *a${levels - 1} } }\n`;
}

type JsonSchema = {
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
 * A value shaped like `schema` (an OpenAPI request body schema), so requests get past
 * validation and reach the domain code; random where the schema leaves room.
 */
export function valueForSchema(random: Random, schema: JsonSchema | undefined, depth = 0): unknown {
  if (!schema || depth > 6) return randomJson(random, 1);
  if (schema.const !== undefined) return schema.const;
  if (schema.enum) return random.pick(schema.enum);
  const choices = schema.anyOf ?? schema.oneOf;
  if (choices) return valueForSchema(random, random.pick(choices), depth + 1);
  const type = Array.isArray(schema.type) ? random.pick(schema.type) : schema.type;
  switch (type) {
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const [key, property] of Object.entries(schema.properties ?? {})) {
        if (schema.required?.includes(key) || random.chance(0.6)) out[key] = valueForSchema(random, property, depth + 1);
      }
      if (schema.additionalProperties && typeof schema.additionalProperties === 'object') {
        for (let i = random.int(3); i > 0; i--) out[random.chance(0.5) ? random.pick(KEYS) : randomString(random).slice(0, 40)] = valueForSchema(random, schema.additionalProperties, depth + 1);
      }
      return out;
    }
    case 'array':
      return Array.from({ length: random.int(4) }, () => valueForSchema(random, schema.items, depth + 1));
    case 'integer':
    case 'number': {
      const min = schema.minimum ?? -5;
      const max = Math.min(schema.maximum ?? 1000, min + 1000);
      const n = min + random.next() * (max - min);
      return type === 'integer' ? Math.round(n) : n;
    }
    case 'boolean':
      return random.chance(0.5);
    case 'string':
      return random.chance(0.5) ? random.pick(['demo', 'owner', 'starter', 'member', 'admin', 'x', 'main', 'correct-horse-battery']) : randomString(random);
    case 'null':
      return null;
    default:
      return randomJson(random, 2);
  }
}
