import { describe, expect, it } from 'vitest';
import { AppError } from '../../protocol/errors.ts';
import { parseTemplateYaml } from './parse.ts';

function failure(text: string, options = {}): AppError {
  try {
    parseTemplateYaml(text, options);
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    return error as AppError;
  }
  throw new Error('expected the template to be refused');
}

const base = `name: demo
workspace:
  image: den/base:bookworm
`;

describe('parseTemplateYaml', () => {
  it('returns the validated spec with defaults applied', () => {
    const spec = parseTemplateYaml(`${base}  startup:\n    - name: hi\n      run: echo hi\n`);
    expect(spec).toMatchObject({ name: 'demo', parameters: [], workspace: { startup: [{ name: 'hi', blocking: true }] } });
  });

  it('points at the line and column of a wrong value', () => {
    const error = failure(`${base}  startup:\n    - name: a\n      run: echo\n      timeout: 30\n`);
    expect(error.code).toBe('TEMPLATE_INVALID');
    expect(error.validations).toEqual([
      { field: 'workspace.startup[0].timeout', detail: 'Write a duration with a unit, such as 30s, 5m or 2h, here, not the number 30.', line: 7, column: 16 },
    ]);
    expect(error.message).toBe('template.yaml is invalid: workspace.startup[0].timeout (line 7): Write a duration with a unit, such as 30s, 5m or 2h, here, not the number 30.');
  });

  it('points at an unknown key and suggests the field meant', () => {
    const error = failure(`${base}  resources:\n    memroy: 4Gi\n`);
    expect(error.validations?.[0]).toEqual({ field: 'workspace.resources.memroy', detail: "'memroy' is not a field here; did you mean 'memory'?", line: 5, column: 5 });
    const other = failure(`${base}colour: red\n`);
    expect(other.validations?.[0].detail).toContain('the fields here are name, displayName');
  });

  it('reports a missing field at the mapping that should hold it', () => {
    const error = failure('name: demo\nworkspace:\n  env: {}\n');
    expect(error.validations?.[0]).toMatchObject({ field: 'workspace.image', detail: "'image' is required; add it.", line: 3 });
  });

  it('reports every problem, cross-field ones included, with lines', () => {
    const error = failure(`${base}environment:
  services:
    api:
      command: node api.js
      dependsOn: [db]
  tests:
    e2e: { service: web, run: npm test }
`);
    expect(error.validations?.map((v) => [v.field, v.line])).toEqual([
      ['environment.services.api.dependsOn[0]', 8],
      ['environment.tests.e2e.service', 10],
    ]);
    expect(error.message).toContain('There is 1 more problem');
  });

  it('points at a bad map key', () => {
    const error = failure(`${base}environment:\n  services:\n    Bad_Name: { command: x }\n`);
    expect(error.validations?.[0]).toMatchObject({ field: 'environment.services.Bad_Name', line: 6, column: 5 });
    expect(error.validations?.[0].detail).toContain('DNS-safe');
  });

  it('checks expressions at push time and points at them', () => {
    const error = failure(`${base}  env:
    A: "\${{ params.cpux }}"
    B: "\${{ services.db.url }}"
    C: "\${{ lower(workspace.name) + nope(1) }}"
    D: "\${{ params.cpu + }}"
    E: "\${{ workspace.name"
parameters:
  - { name: cpu, type: number, default: 2 }
`);
    const details = error.validations!.map((v) => `${v.field}@${v.line}: ${v.detail}`);
    expect(details).toEqual([
      "workspace.env.A@5: The expression `${{ params.cpux }}` uses 'params.cpux': the template has no parameter 'cpux'; the parameters are cpu.",
      "workspace.env.B@6: The expression `${{ services.db.url }}` uses 'services.db.url': the template has no service 'db'; it declares no services.",
      'workspace.env.C@7: The expression `${{ lower(workspace.name) + nope(1) }}` calls \'nope\', which does not exist; the functions are lower, upper, trim, string, default, join, contains, number.',
      'workspace.env.D@8: The expression `${{ params.cpu + }}` is invalid: expected a value but found the end of the expression.',
      "workspace.env.E@9: The expression starting at position 1 is not closed with '}}'; close it with '}}'.",
    ]);
  });

  it('accepts expressions that name what the plan provides', () => {
    expect(() => parseTemplateYaml(`${base}  env:
    A: "\${{ services.db.url }} \${{ services.db.ports.5432.host }} \${{ owner.displayName }} \${{ workspace.owner }} \${{ params.tags.0 }}"
parameters:
  - { name: tags, type: list, default: [a] }
environment:
  services:
    db: { command: x, ports: [{ port: 5432 }] }
`)).not.toThrow();
  });

  it.each([
    ['a syntax error', 'name: demo\nworkspace: [\n', 'TEMPLATE_YAML_INVALID', 'line 3'],
    ['a tab indent', 'name: demo\nworkspace:\n\timage: x\n', 'TEMPLATE_YAML_INVALID', 'line 3'],
    ['duplicate keys', 'name: demo\nname: other\nworkspace: { image: x }\n', 'TEMPLATE_YAML_INVALID', 'line 2'],
    ['two documents', `${base}---\nname: two\n`, 'TEMPLATE_YAML_INVALID', 'line 4'],
    ['an unknown tag', 'name: !secret demo\nworkspace: { image: x }\n', 'TEMPLATE_YAML_INVALID', 'line 1'],
    ['a list root', '- name: demo\n', 'TEMPLATE_INVALID', 'must be a mapping'],
    ['a scalar root', 'hello', 'TEMPLATE_INVALID', 'must be a mapping'],
    ['an empty document', '', 'TEMPLATE_INVALID', 'must be a mapping'],
    ['the reserved name', 'name: schema\nworkspace: { image: x }\n', 'TEMPLATE_INVALID', 'reserved'],
  ])('refuses %s', (_, text, code, fragment) => {
    const error = failure(text);
    expect(error.code).toBe(code);
    expect(error.message).toContain(fragment);
  });

  it('refuses an alias bomb without expanding it', () => {
    const levels = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 9; i++) levels.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill(`*${String.fromCharCode(96 + i)}`).join(',')}]`);
    const error = failure(`${levels.join('\n')}\n`);
    expect(error.code).toBe('TEMPLATE_YAML_INVALID');
    expect(error.message).toContain('aliases');
  });

  it('refuses deep nesting and oversized documents', () => {
    expect(failure(`${base}  env: ${'['.repeat(20_000)}`).code).toBe('TEMPLATE_YAML_INVALID');
    expect(failure(`name: demo\nworkspace:\n  image: x\nx: ${'{a: '.repeat(5000)}1${'}'.repeat(5000)}\n`).code).toMatch(/^TEMPLATE_(YAML_)?INVALID$/);
    const big = failure(`${base}description: "${'x'.repeat(2048)}"\n`, { maxBytes: 1024 });
    expect(big.code).toBe('PAYLOAD_TOO_LARGE');
  });
});
