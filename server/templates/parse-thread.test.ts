import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../protocol/errors.ts';
import { parseTemplateYaml } from './parse.ts';
import { INLINE_PARSE_NODES, MAX_WAITING_PARSES, readTemplateYaml } from './parse-thread.ts';

const nodeApi = readFileSync(join(import.meta.dirname, '../../templates/node-api/template.yaml'), 'utf8');
/** Three nodes per variable (key, ':', value): past INLINE_PARSE_NODES, so it is read on the worker. */
const large = `name: large\nworkspace:\n  image: x\n  env:\n${Array.from({ length: INLINE_PARSE_NODES / 2 }, (_, i) => `    V${i}: v`).join('\n')}\n`;

async function refusal(promise: Promise<unknown>): Promise<AppError> {
  const error = await promise.then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(AppError);
  return error as AppError;
}

function inlineRefusal(text: string): AppError {
  try {
    parseTemplateYaml(text);
  } catch (error) {
    return error as AppError;
  }
  throw new Error('expected a refusal');
}

describe('readTemplateYaml', () => {
  it('answers small and large documents with the same spec and coded refusals as parseTemplateYaml', async () => {
    expect(await readTemplateYaml(nodeApi)).toEqual(parseTemplateYaml(nodeApi));
    expect(await readTemplateYaml(large)).toEqual(parseTemplateYaml(large));
    expect(Object.keys((await readTemplateYaml(large)).workspace.env!)).toHaveLength(INLINE_PARSE_NODES / 2);

    for (const invalid of [`${large}  resources:\n    memroy: 4Gi\n`, 'name: demo\nworkspace:\n  image: x\n  resources:\n    memroy: 4Gi\n']) {
      const read = await refusal(readTemplateYaml(invalid));
      expect(read).toMatchObject({ code: 'TEMPLATE_INVALID', status: 400 });
      expect(read.toEnvelope()).toEqual(inlineRefusal(invalid).toEnvelope());
    }
    const bomb = await refusal(readTemplateYaml(`name: x\nw: ${'- '.repeat(1_000_000)}x\n`, { maxBytes: 4 * 1024 * 1024 }));
    expect(bomb).toMatchObject({ code: 'TEMPLATE_YAML_INVALID', validations: [{ field: '(yaml)', line: 2 }] });
  });

  it(`refuses a large document with RATE_LIMITED when ${MAX_WAITING_PARSES} are already waiting, and reads the rest`, async () => {
    const settled = await Promise.allSettled(Array.from({ length: MAX_WAITING_PARSES + 2 }, () => readTemplateYaml(large)));
    // One is being read and MAX_WAITING_PARSES wait; the one after them is refused at once.
    expect(settled.filter((s) => s.status === 'fulfilled')).toHaveLength(MAX_WAITING_PARSES + 1);
    const refused = settled.find((s) => s.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason).toMatchObject({ code: 'RATE_LIMITED', status: 429 });
  });
});
