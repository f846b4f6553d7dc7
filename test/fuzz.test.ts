import fc from 'fast-check';
import { parse as parseYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AppError, errorEnvelopeSchema } from '../protocol/errors.ts';
import { templateSchema } from '../protocol/template.ts';
import { evaluateExpression, evaluateTemplateValue } from '../server/templates/expressions.ts';
import { resolveParameters } from '../server/templates/parameters.ts';
import { parseTemplateYaml } from '../server/templates/parse.ts';
import { mutatedDocument, startBodyFuzzWorld, templateCorpus, type BodyFuzzWorld } from './support/fuzz-bodies.ts';
import { aliasBomb, hostileJson, nastyString } from './support/fuzz-gen.ts';

/**
 * Throws random and mutated template documents at the parser and evaluator, and random and
 * mutated bodies at every API route and the log streams: the parser may only throw AppError, the
 * API may never answer 500, and every 4xx carries the error envelope. fast-check with a fixed seed
 * and a fixed number of cases, so a run takes seconds; DEN_FUZZ_SEED replays another seed, and a
 * failure prints the seed and the shrunk counterexample. `npm run fuzz` runs the API targets longer.
 */

const SEED = Number(process.env.DEN_FUZZ_SEED ?? 20261126);
const PARSER_CASES = 500;
const EXPRESSION_CASES = 1500;
const PUSH_CASES = 120;
const RAW_CASES = 50;
/** Cases over all routes: about a dozen per route, as many as the hand-written generator sent. */
const ROUTE_CASES = 400;
const LOG_STREAM_CASES = 150;

function expectOnlyAppError(run: () => unknown): void {
  try {
    run();
  } catch (error) {
    if (!(error instanceof AppError)) throw new Error(`non-AppError thrown: ${(error as Error)?.stack ?? String(error)}`);
    expect(errorEnvelopeSchema.safeParse(error.toEnvelope()).success).toBe(true);
    expect(error.status).toBeLessThan(500);
  }
}

describe('fuzzing the template parser', () => {
  it('the example templates parse cleanly (the corpus is valid)', () => {
    for (const text of templateCorpus) expect(() => parseTemplateYaml(text)).not.toThrow();
  });

  it(`throws only AppError for ${PARSER_CASES} mutated documents (seed ${SEED})`, () => {
    let accepted = 0;
    fc.assert(fc.property(mutatedDocument, (text) => {
      expectOnlyAppError(() => {
        parseTemplateYaml(text, { maxBytes: 256 * 1024 });
        accepted++;
      });
    }), { seed: SEED, numRuns: PARSER_CASES });
    // Some mutations leave the document valid; all of them being refused would mean the corpus broke.
    expect(accepted).toBeGreaterThan(0);
  });

  it('refuses alias bombs of every shape quickly', () => {
    fc.assert(fc.property(aliasBomb(), (text) => expectOnlyAppError(() => parseTemplateYaml(text))), { seed: SEED + 1, numRuns: 30 });
  });

  it(`evaluates ${EXPRESSION_CASES} random expressions without throwing anything but AppError`, () => {
    const scope = {
      params: { cpu: 2, name: 'x', tags: ['a'], on: true },
      workspace: { id: 'i', name: 'w', owner: 'o' },
      owner: { id: 'u', name: 'o', displayName: 'O' },
      services: { db: { host: 'h', port: 1, url: 'u', ports: { 1: { host: 'h', port: 1, url: 'u' } } } },
    };
    const atoms = ['params.cpu', 'params.tags', 'services.db.url', 'workspace', 'owner.name', '__proto__', 'constructor', '1', '"s"', "'t'",
      'true', 'null', '(', ')', '+', '==', '!=', '&&', '||', '!', '?', ':', ',', '.', 'lower(', 'join(', 'default(', 'number(', '${{', '}}', '[', '-'];
    const source = fc.oneof(
      { weight: 4, arbitrary: fc.tuple(fc.array(fc.constantFrom(...atoms), { minLength: 1, maxLength: 12 }), fc.constantFrom('', ' ')).map(([parts, glue]) => parts.join(glue)) },
      { weight: 1, arbitrary: nastyString },
    );
    fc.assert(fc.property(source, (text) => {
      expectOnlyAppError(() => evaluateExpression(text, scope));
      expectOnlyAppError(() => evaluateTemplateValue({ a: [`x${'${{'}${text}}}y`] }, scope, 'f'));
    }), { seed: SEED + 2, numRuns: EXPRESSION_CASES });
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('resolves random parameter values without throwing anything but AppError', () => {
    const spec = templateSchema.parse(parseYaml(templateCorpus[0]));
    const withParams = { parameters: [...spec.parameters,
      { name: 'n', type: 'number' as const, default: 5, mutable: false, ephemeral: false, validation: { min: 1, max: 9, monotonic: 'increasing' as const } },
      { name: 'l', type: 'list' as const, default: ['a'], mutable: true, ephemeral: false, options: ['a', 'b'] },
      { name: 's', type: 'string' as const, default: 'a', mutable: true, ephemeral: true, validation: { regex: '^[a-z]+$' } },
    ] };
    const asRecord = (v: unknown) => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});
    fc.assert(fc.property(hostileJson(2), fc.option(hostileJson(2), { nil: undefined }), (given, previous) => {
      expectOnlyAppError(() => resolveParameters(withParams, asRecord(given), previous === undefined ? undefined : asRecord(previous)));
    }), { seed: SEED + 3, numRuns: 500 });
  });
});

describe('fuzzing the API', () => {
  let world: BodyFuzzWorld;
  beforeAll(async () => {
    world = await startBodyFuzzWorld();
  });
  afterAll(async () => {
    if (process.env.DEN_FUZZ_VERBOSE) console.log([...world.tally].sort().map(([key, count]) => `${count}\t${key}`).join('\n'));
    await world?.close();
  });

  const cases: [string, number][] = [
    ['template pushes', PUSH_CASES],
    ['raw request bodies', RAW_CASES],
    ['route bodies', ROUTE_CASES],
    ['log streams (build and service logs, follow)', LOG_STREAM_CASES],
  ];
  it.each(cases)('answers %s with 2xx or a coded 4xx, never 500 (%i cases)', async (name, runs) => {
    const target = world.targets.find((candidate) => candidate.name === name)!;
    await fc.assert(fc.asyncProperty(target.arbitrary, (input) => target.run(input)), { seed: SEED + 4, numRuns: runs });
  });

  it('created some templates from the mutated pushes (mutations still reach the domain code)', () => {
    expect(world.templatesCreated).toBeGreaterThan(0);
  });
});
