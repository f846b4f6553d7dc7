import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AppError } from '../../protocol/errors.ts';
import { parseTemplateYaml } from './parse.ts';
import { MAX_YAML_DEPTH, MAX_YAML_NODES } from './yaml-bounds.ts';

const FOUR_MB = 4 * 1024 * 1024;
const root = join(import.meta.dirname, '../..');

function refusal(text: string): AppError {
  try {
    parseTemplateYaml(text, { maxBytes: FOUR_MB });
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    return error as AppError;
  }
  throw new Error('expected the template to be refused');
}

const head = 'name: demo\nworkspace:\n  image: x\n';

/** `lines` lines, each nested one level deeper than the one before it. */
function indented(lines: number, line: (level: number) => string): string {
  return Array.from({ length: lines }, (_, level) => `${' '.repeat(level)}${line(level)}`).join('\n');
}

describe('template YAML bounds', () => {
  it.each([
    ['a block sequence bomb on one line (3.8 MB)', `${head}x: ${'- '.repeat(1_900_000)}x\n`, 4],
    ['explicit keys on one line', `${head}x: ${'? '.repeat(100_000)}x\n`, 4],
    ['sequences and keys mixed on one line', `${head}x:\n  ${'- ? '.repeat(50_000)}x\n`, 5],
    ['a block sequence indented one column per level', `${head}x:\n${indented(2000, () => '-')}\n`, 5 + MAX_YAML_DEPTH / 2],
    ['mappings indented one column per level', `${head}x:\n${indented(2000, (level) => `k${level}:`)}\n`, 5 + MAX_YAML_DEPTH / 2],
    ['anchored sequences', `${head}x: ${'&a - '.repeat(100_000)}x\n`, 4],
    ['flow collections whose strings hold closing brackets', `${head}x: ${'["]", '.repeat(100_000)}\n`, 4],
  ])('refuses %s with the line and the depth limit', (_, text, line) => {
    const error = refusal(text);
    expect(error.code).toBe('TEMPLATE_YAML_INVALID');
    expect(error.message).toContain(`nests more than ${MAX_YAML_DEPTH} levels deep`);
    expect(error.validations?.[0]).toMatchObject({ field: '(yaml)', line: expect.any(Number) });
    // The scan may count a level twice, so the line it names is at most twice the limit down.
    expect(error.validations![0].line).toBeGreaterThanOrEqual(4);
    expect(error.validations![0].line).toBeLessThanOrEqual(line + MAX_YAML_DEPTH);
  });

  it('refuses 950,000 flat list items (3.8 MB) at the node limit, naming the line', () => {
    const error = refusal(`${head}parameters:\n${'- 1\n'.repeat(950_000)}`);
    expect(error.code).toBe('TEMPLATE_YAML_INVALID');
    expect(error.message).toContain(`more than ${MAX_YAML_NODES} YAML nodes`);
    // Two nodes per item (the '-' and the value): the limit passes about MAX_YAML_NODES / 2 lines down.
    expect(error.validations?.[0].line).toBeGreaterThan(MAX_YAML_NODES / 2 - 10);
    expect(error.validations?.[0].line).toBeLessThan(MAX_YAML_NODES / 2 + 10);
  });

  it('refuses a flow list of 1.9 million items at the node limit', () => {
    expect(refusal(`${head}parameters: [${'1,'.repeat(1_900_000)}]\n`).message).toContain(`more than ${MAX_YAML_NODES} YAML nodes`);
  });

  it('refuses aliases that copy a large list many times, naming the alias line', () => {
    const list = `big: &big [${Array(2000).fill('x').join(', ')}]\n`;
    const copies = Array.from({ length: 50 }, (_, i) => `  - *big # copy ${i}`).join('\n');
    const error = refusal(`${list}${head}copies:\n${copies}\n`);
    expect(error.code).toBe('TEMPLATE_YAML_INVALID');
    expect(error.message).toContain('aliases that expand to more than');
    expect(error.validations?.[0].line).toBe(6);
  });

  it('refuses aliases that copy a long string past the size limit', () => {
    const text = `s: &s "${'x'.repeat(50_000)}"\n${head}  env:\n${Array.from({ length: 30 }, (_, i) => `    V${i}: *s`).join('\n')}\n`;
    try {
      parseTemplateYaml(text, { maxBytes: 1024 * 1024 });
      throw new Error('expected a refusal');
    } catch (error) {
      expect((error as AppError).message).toContain('aliases that expand to more than 1048576 bytes');
    }
  });

  it('still parses the example templates, a template nested twenty levels deep and aliases used sparingly', () => {
    for (const name of ['starter', 'node-api']) {
      const text = readFileSync(join(root, 'templates', name, 'template.yaml'), 'utf8');
      expect(parseTemplateYaml(text).name).toBe(name);
    }
    // Deeper than any template field goes: past the YAML bounds, refused by the schema only.
    expect(refusal(`${head}  startup:\n    - name: deep\n      run: ${'['.repeat(20)}${']'.repeat(20)}\n`).code).toBe('TEMPLATE_INVALID');
    expect(refusal(`${head}  env:\n${indented(20, (level) => `  k${level}:`)} x\n`).code).toBe('TEMPLATE_INVALID');
    const aliases = `${head}  env:\n    A: &v shared\n    B: *v\n    C: *v\n`;
    expect(parseTemplateYaml(aliases).workspace.env).toEqual({ A: 'shared', B: 'shared', C: 'shared' });
  });
});
