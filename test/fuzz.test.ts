import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify } from 'yaml';
import { AppError, errorEnvelopeSchema } from '../protocol/errors.ts';
import { templateSchema } from '../protocol/template.ts';
import { evaluateExpression, evaluateTemplateValue } from '../server/templates/expressions.ts';
import { resolveParameters } from '../server/templates/parameters.ts';
import { parseTemplateYaml } from '../server/templates/parse.ts';
import { aliasBomb, mutateTree, mutateYaml, randomJson, randomString, seededRandom, valueForSchema, type Random } from './support/fuzz-gen.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { setupOwner } from './support/users.ts';

/**
 * Throws random and mutated template documents at the parser and evaluator, and random and
 * mutated bodies at every API route: the parser may only throw AppError, the API may never
 * answer 500, and every 4xx carries the error envelope. Seeded: set DEN_FUZZ_SEED to replay a
 * failure (its seed is in the assertion message). Iterations are fixed, so a run takes seconds.
 */

const SEED = Number(process.env.DEN_FUZZ_SEED ?? 20261126);
const PARSER_CASES = 500;
const EXPRESSION_CASES = 1500;
const PUSH_CASES = 120;
const BODIES_PER_ROUTE = 12;

const TEMPLATES_DIR = join(import.meta.dirname, '..', 'templates');
const corpus = readdirSync(TEMPLATES_DIR)
  .filter((name) => statSync(join(TEMPLATES_DIR, name)).isDirectory())
  .map((name) => readFileSync(join(TEMPLATES_DIR, name, 'template.yaml'), 'utf8'));

function expectOnlyAppError(run: () => unknown, describeCase: () => string): void {
  try {
    run();
  } catch (error) {
    if (!(error instanceof AppError)) {
      throw new Error(`non-AppError thrown for ${describeCase()}: ${(error as Error)?.stack ?? String(error)}`);
    }
    expect(errorEnvelopeSchema.safeParse(error.toEnvelope()).success, describeCase()).toBe(true);
    expect(error.status, describeCase()).toBeLessThan(500);
  }
}

function mutatedDocument(random: Random): string {
  const base = random.pick(corpus);
  if (random.chance(0.4)) {
    // Structure-aware: valid YAML whose tree is wrong in one or a few places.
    let tree = parseYaml(base) as unknown;
    for (let i = 1 + random.int(3); i > 0; i--) tree = mutateTree(random, tree);
    return stringify(tree);
  }
  let text = base;
  for (let i = 1 + random.int(3); i > 0; i--) text = mutateYaml(random, text);
  return text;
}

describe('fuzzing the template parser', () => {
  it('the example templates parse cleanly (the corpus is valid)', () => {
    for (const text of corpus) expect(() => parseTemplateYaml(text)).not.toThrow();
  });

  it(`throws only AppError for ${PARSER_CASES} mutated documents (seed ${SEED})`, () => {
    const random = seededRandom(SEED);
    let accepted = 0;
    for (let i = 0; i < PARSER_CASES; i++) {
      const text = mutatedDocument(random);
      expectOnlyAppError(() => {
        parseTemplateYaml(text, { maxBytes: 256 * 1024 });
        accepted++;
      }, () => `case ${i} (seed ${SEED}): ${JSON.stringify(text.slice(0, 300))}`);
    }
    // Some mutations leave the document valid; all of them being refused would mean the corpus broke.
    expect(accepted).toBeGreaterThan(0);
  });

  it('refuses alias bombs of every shape quickly', () => {
    const random = seededRandom(SEED + 1);
    for (let i = 0; i < 30; i++) {
      const text = aliasBomb(random);
      expectOnlyAppError(() => parseTemplateYaml(text), () => `bomb ${i}: ${text.slice(0, 200)}`);
    }
  });

  it(`evaluates ${EXPRESSION_CASES} random expressions without throwing anything but AppError`, () => {
    const random = seededRandom(SEED + 2);
    const scope = {
      params: { cpu: 2, name: 'x', tags: ['a'], on: true },
      workspace: { id: 'i', name: 'w', owner: 'o' },
      owner: { id: 'u', name: 'o', displayName: 'O' },
      services: { db: { host: 'h', port: 1, url: 'u', ports: { 1: { host: 'h', port: 1, url: 'u' } } } },
    };
    const atoms = ['params.cpu', 'params.tags', 'services.db.url', 'workspace', 'owner.name', '__proto__', 'constructor', '1', '"s"', "'t'",
      'true', 'null', '(', ')', '+', '==', '!=', '&&', '||', '!', '?', ':', ',', '.', 'lower(', 'join(', 'default(', 'number(', '${{', '}}', '[', '-'];
    for (let i = 0; i < EXPRESSION_CASES; i++) {
      const source = random.chance(0.8)
        ? Array.from({ length: 1 + random.int(12) }, () => random.pick(atoms)).join(random.pick(['', ' ']))
        : randomString(random);
      expectOnlyAppError(() => evaluateExpression(source, scope), () => `expression ${JSON.stringify(source)} (seed ${SEED})`);
      expectOnlyAppError(() => evaluateTemplateValue({ a: [`x${'${{'}${source}}}y`] }, scope, 'f'), () => `value ${JSON.stringify(source)}`);
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('resolves random parameter values without throwing anything but AppError', () => {
    const random = seededRandom(SEED + 3);
    const spec = templateSchema.parse(parseYaml(corpus[0]));
    const withParams = { parameters: [...spec.parameters,
      { name: 'n', type: 'number' as const, default: 5, mutable: false, ephemeral: false, validation: { min: 1, max: 9, monotonic: 'increasing' as const } },
      { name: 'l', type: 'list' as const, default: ['a'], mutable: true, ephemeral: false, options: ['a', 'b'] },
      { name: 's', type: 'string' as const, default: 'a', mutable: true, ephemeral: true, validation: { regex: '^[a-z]+$' } },
    ] };
    for (let i = 0; i < 500; i++) {
      const given = randomJson(random, 2);
      const previous = random.chance(0.5) ? randomJson(random, 2) : undefined;
      const asRecord = (v: unknown) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});
      expectOnlyAppError(() => resolveParameters(withParams, asRecord(given), previous === undefined ? undefined : asRecord(previous)), () => `params ${JSON.stringify(given)}`);
    }
  });
});

describe('fuzzing the API', () => {
  let server: TestServer;
  let token: string;
  let routes: { method: string; path: string; body?: Record<string, unknown> }[];

  beforeAll(async () => {
    server = await startTestServer({ startWorkers: false, config: { maxTemplateBytes: 128 * 1024 } });
    token = (await setupOwner(server.app)).token;
    const openapi = server.app.swagger() as { paths: Record<string, Record<string, { requestBody?: { content?: Record<string, { schema?: Record<string, unknown> }> } }>> };
    routes = Object.entries(openapi.paths)
      .flatMap(([path, methods]) => Object.entries(methods).map(([method, operation]) => ({
        method: method.toUpperCase(),
        path,
        body: operation.requestBody?.content?.['application/json']?.schema,
      })))
      // Not request/response: websockets and log streams would wait for the client; logout ends the fuzzer's own token.
      .filter(({ path }) => path.startsWith('/api/v1/') && !/agent|terminal|connect|logout|\/logs|ssh\/|stream|events/.test(path));
  });
  // DEN_FUZZ_VERBOSE=1 prints how the answers spread over routes, statuses and codes.
  const tally = new Map<string, number>();
  afterAll(async () => {
    if (process.env.DEN_FUZZ_VERBOSE) console.log([...tally].sort().map(([key, count]) => `${count}\t${key}`).join('\n'));
    await server?.close();
  });

  async function send(method: string, url: string, payload: unknown, raw = false) {
    const response = await server.app.inject({
      method: method as 'POST',
      url,
      headers: { authorization: `Bearer ${token}`, ...(raw ? { 'content-type': 'application/json' } : {}) },
      ...(payload === undefined ? {} : { payload: raw ? (payload as string) : JSON.stringify(payload) }),
      ...(payload !== undefined && !raw ? { headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } } : {}),
    });
    if (process.env.DEN_FUZZ_VERBOSE) {
      const key = `${method} ${url.split('/').slice(0, 5).join('/')} ${response.statusCode} ${response.statusCode >= 400 ? (response.json() as { error?: { code?: string } }).error?.code : ''}`;
      tally.set(key, (tally.get(key) ?? 0) + 1);
    }
    const where = `${method} ${url} with ${JSON.stringify(payload)?.slice(0, 300)} (seed ${SEED})`;
    expect(response.statusCode, `${where} answered ${response.body.slice(0, 500)}`).toBeLessThan(500);
    if (response.statusCode >= 400) {
      expect(errorEnvelopeSchema.safeParse(response.json()).success, `${where}: ${response.body.slice(0, 300)}`).toBe(true);
    }
    return response;
  }

  it(`answers ${PUSH_CASES} random and mutated template pushes with 2xx or a coded 4xx`, async () => {
    const random = seededRandom(SEED + 4);
    let created = 0;
    for (let i = 0; i < PUSH_CASES; i++) {
      let body: unknown;
      switch (random.int(4)) {
        case 0:
          body = randomJson(random, 3);
          break;
        case 1:
          body = mutateTree(random, { files: { 'template.yaml': random.pick(corpus), 'a/b.txt': 'x' }, message: 'm', activate: true });
          break;
        default:
          body = { files: { 'template.yaml': mutatedDocument(random) }, activate: random.chance(0.5) };
      }
      const response = await send('POST', '/api/v1/templates', body);
      if (response.statusCode === 201) created++;
    }
    expect(created).toBeGreaterThan(0);
  });

  it('answers malformed JSON, wrong content types and hostile keys with a coded 4xx', async () => {
    const random = seededRandom(SEED + 5);
    const raws = ['{', '[', 'nul', '"\\u0000"', '{"files": {"template.yaml": 1}}', '{"__proto__": {"x": 1}}', '{"constructor": {"prototype": {"x": 1}}}',
      `${'['.repeat(5000)}${']'.repeat(5000)}`, `{"files": {"template.yaml": "${'x'.repeat(200 * 1024)}"}}`, '\u0000\u0001', ''];
    for (const raw of raws) await send('POST', '/api/v1/templates', raw, true);
    for (let i = 0; i < 40; i++) {
      const bytes = Array.from({ length: random.int(64) }, () => String.fromCharCode(random.int(256))).join('');
      await send('POST', '/api/v1/templates', bytes, true);
    }
  });

  it(`sends ${BODIES_PER_ROUTE} random bodies to every route with random path parameters`, async () => {
    const random = seededRandom(SEED + 6);
    expect(routes.length).toBeGreaterThan(5);
    // Raw percent sequences (invalid UTF-8, NUL) as well as encoded random text.
    const segment = () => random.chance(0.2)
      ? random.pick(['%ff', '%00', '%E0%A4%A', '%2e%2e', '..', '%2F'])
      : encodeURIComponent(random.pick(['demo', 'owner', 'starter', '1', '0', '-1', '99999999999', randomString(random).slice(0, 80).toWellFormed() || 'x']));
    for (const route of routes) {
      for (let i = 0; i < BODIES_PER_ROUTE; i++) {
        const url = route.path.replace(/\{[^}]+\}/g, segment);
        // Half shaped by the route's own body schema (to reach the domain code), half noise.
        const shaped = () => (random.chance(0.5) ? valueForSchema(random, route.body) : mutateTree(random, valueForSchema(random, route.body)));
        const body = route.method === 'GET' || route.method === 'DELETE' ? undefined : route.body && random.chance(0.6) ? shaped() : randomJson(random, 3);
        await send(route.method, url, body);
      }
    }
  });
});
