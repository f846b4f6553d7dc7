import { describe, expect, it } from 'vitest';
import { AppError } from '../../protocol/errors.ts';
import {
  createTemplateScope,
  evaluateExpression,
  evaluateTemplateValue,
  findExpressions,
  parseExpression,
  referencedNames,
} from './expressions.ts';

const scope = createTemplateScope({
  params: { cpu: 2, disk: 10, greeting: 'Hello', debug: false, tags: ['a', 'b'], empty: '' },
  workspace: { id: 'w-1', name: 'demo' },
  owner: { name: 'alice' },
  services: { db: { 5432: { host: '127.0.0.1', port: 5432, url: 'postgres://127.0.0.1:5432' } }, 'my-api': { 3000: { host: '127.0.0.1', port: 3000 } } },
});

function expressionError(run: () => unknown): AppError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe('EXPRESSION_INVALID');
    return error as AppError;
  }
  throw new Error('expected EXPRESSION_INVALID, but evaluation succeeded');
}

describe('evaluateTemplateValue', () => {
  it('keeps the type of a value that is exactly one expression', () => {
    expect(evaluateTemplateValue('${{ params.cpu }}', scope, 'workspace.resources.cpu')).toBe(2);
    expect(evaluateTemplateValue('${{params.debug}}', scope, 'x')).toBe(false);
    expect(evaluateTemplateValue('${{ params.tags }}', scope, 'x')).toEqual(['a', 'b']);
  });

  it('interpolates embedded expressions as text', () => {
    expect(evaluateTemplateValue('${{ params.disk }}Gi', scope, 'workspace.home.size')).toBe('10Gi');
    expect(evaluateTemplateValue('${{ owner.name }}/${{ workspace.name }} ${{ params.tags }}', scope, 'x')).toBe('alice/demo a,b');
    expect(evaluateTemplateValue(' ${{ params.cpu }}', scope, 'x')).toBe(' 2');
  });

  it('walks arrays and objects, leaving keys and non-strings alone', () => {
    const value = { env: { URL: '${{ services.db.url }}', N: 3 }, command: ['echo', '${{ lower(params.greeting) }}'], ok: true };
    expect(evaluateTemplateValue(value, scope, 'workspace')).toEqual({
      env: { URL: 'postgres://127.0.0.1:5432', N: 3 },
      command: ['echo', 'hello'],
      ok: true,
    });
  });

  it('leaves strings without expressions untouched', () => {
    expect(evaluateTemplateValue('plain $ { {text}} }}', scope, 'x')).toBe('plain $ { {text}} }}');
  });

  it('names the field path of a nested failure', () => {
    const error = expressionError(() => evaluateTemplateValue({ env: { A: ['ok', '${{ params.nope }}'] } }, scope, 'workspace'));
    expect(error.validations?.[0].field).toBe('workspace.env.A[1]');
    expect(error.message).toContain('workspace.env.A[1]');
  });

  it('finds a closing }} only outside quoted strings', () => {
    expect(evaluateTemplateValue("${{ '}}' }}", scope, 'x')).toBe('}}');
    expect(findExpressions('a ${{ "x}}" + params.cpu }} b ${{1}}').map((s) => s.source.trim())).toEqual(['"x}}" + params.cpu', '1']);
  });

  it('rejects an unclosed expression', () => {
    const error = expressionError(() => evaluateTemplateValue('size ${{ params.disk Gi', scope, 'workspace.home.size'));
    expect(error.message).toContain('not closed');
  });
});

describe('evaluateExpression', () => {
  it.each([
    ['1 + 2', 3],
    ['"a" + 1', 'a1'],
    ["'x' + params.cpu + params.disk", 'x210'],
    ['params.cpu + params.disk', 12],
    ['params.cpu == 2', true],
    ['params.cpu == "2"', true],
    ['params.cpu != 2', false],
    ['params.debug || "fallback"', 'fallback'],
    ['params.greeting && "yes"', 'yes'],
    ['!params.debug', true],
    ['!!params.empty', false],
    ['params.cpu == 2 ? "big" : "small"', 'big'],
    ['params.debug ? 1 : params.cpu == 3 ? 2 : 3', 3],
    ['(1 + 2) == 3 && true', true],
    ['upper(params.greeting)', 'HELLO'],
    ['lower("ABC")', 'abc'],
    ['trim("  x ")', 'x'],
    ['default(params.empty, "d")', 'd'],
    ['default(params.greeting, "d")', 'Hello'],
    ['join(params.tags, "+")', 'a+b'],
    ['join(params.tags)', 'a,b'],
    ['contains(params.tags, "b")', true],
    ['contains(params.greeting, "ell")', true],
    ['number("4") + 1', 5],
    ['string(4) + 1', '41'],
    ['services.my-api.url', 'http://127.0.0.1:3000'],
    ['services.db.port', 5432],
    ['services.db.ports.5432.host', '127.0.0.1'],
    ['workspace.owner', 'alice'],
    ['params.tags.1', 'b'],
    ['"esc\\"aped\\n"', 'esc"aped\n'],
    ['null', null],
    ['1.5 + 1', 2.5],
  ])('evaluates %s', (source, expected) => {
    expect(evaluateExpression(source, scope)).toEqual(expected);
  });

  it('names the unknown name and lists the names that exist', () => {
    const error = expressionError(() => evaluateExpression(' params.cpux ', scope, 'workspace.resources.cpu'));
    expect(error.message).toContain("unknown name 'params.cpux'");
    expect(error.message).toContain('params.cpu, params.disk');
    expect(error.message).toContain('workspace.resources.cpu');
    expect(error.message).toContain('${{ params.cpux }}');
    const root = expressionError(() => evaluateExpression('secrets.x', scope));
    expect(root.message).toContain('params, workspace, owner, services');
  });

  it('reports reading into a scalar', () => {
    const error = expressionError(() => evaluateExpression('params.cpu.value', scope));
    expect(error.message).toContain("'params.cpu' is a number");
  });

  it('refuses a group of values where a value is needed', () => {
    expect(expressionError(() => evaluateTemplateValue('${{ services.db }}', scope, 'x')).message).toContain('pick one of its fields: host, port, url, ports');
    expect(expressionError(() => evaluateTemplateValue('url=${{ services }}', scope, 'x')).message).toContain('group of values');
  });

  it.each([
    ['', 'empty'],
    ['   ', 'empty'],
    ['1 +', 'expected a value'],
    ['(1', "closing ')'"],
    ['a b', "unexpected 'b'"],
    ['a = b', "compare with '=='"],
    ['params.cpu - 1', 'no subtraction'],
    ['a ? b', "':'"],
    ['"unterminated', 'not closed'],
    ["'bad \\q escape'", 'unknown escape'],
    ['params.', 'expected a name'],
    ['2Gi', 'neither a number nor a name'],
    ['nosuch(1)', "no function 'nosuch'"],
    ['lower()', 'takes 1 argument'],
    ['lower(1, 2)', 'takes 1 argument'],
    ['join(params.cpu)', 'takes a list'],
    ['number("x")', 'cannot turn'],
    ['a;b', "unexpected character ';'"],
    ['params[0]', "unexpected character '['"],
  ])('rejects %j', (source, fragment) => {
    expect(expressionError(() => evaluateExpression(source, scope)).message).toContain(fragment);
  });
});

describe('hostile input', () => {
  it.each(['__proto__', 'constructor', 'prototype', 'params.__proto__', 'params.constructor.name', 'owner.name.constructor', 'services.db.__proto__.polluted'])(
    'refuses the prototype name in %s',
    (source) => {
      expect(expressionError(() => evaluateExpression(source, scope)).message).toContain('is not allowed');
    },
  );

  it('never reaches inherited members or functions of the scope', () => {
    for (const source of ['toString', 'params.hasOwnProperty', 'owner.name.length', 'params.tags.length', 'valueOf', 'toString(1)', 'constructor(1)', 'eval("1")', 'Function("x")']) {
      expressionError(() => evaluateExpression(source, scope));
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('does not read through objects that are not plain data', () => {
    const tricky = { params: { date: new Date(0), map: new Map([['size', 1]]), fn: () => 1 } };
    expressionError(() => evaluateExpression('params.date', tricky));
    expressionError(() => evaluateExpression('params.map.size', tricky));
    expressionError(() => evaluateExpression('params.fn', tricky));
  });

  it('bounds nesting depth without overflowing the stack', () => {
    expect(expressionError(() => evaluateExpression('('.repeat(500) + '1' + ')'.repeat(500), scope)).message).toContain('nests deeper');
    expect(expressionError(() => evaluateExpression('!'.repeat(500) + 'true', scope)).message).toContain('nests deeper');
    expect(expressionError(() => evaluateExpression('1 ? '.repeat(200) + '1' + ' : 1'.repeat(200), scope)).message).toContain('nests deeper');
    expect(evaluateExpression('('.repeat(20) + '1' + ')'.repeat(20), scope)).toBe(1);
  });

  it('refuses very long expressions and runaway results', () => {
    expect(expressionError(() => evaluateExpression('1+'.repeat(2000) + '1', scope)).message).toContain('longer than');
    const big = { params: { s: 'x'.repeat(100_000) } };
    expect(expressionError(() => evaluateExpression('params.s + params.s + params.s', big)).message).toContain('longer than');
  });

  it('treats template text as data, not as code', () => {
    expect(evaluateTemplateValue('${{ "${{ params.cpu }}" }}', scope, 'x')).toBe('${{ params.cpu }}');
    expect(evaluateExpression('"process.exit(1)"', scope)).toBe('process.exit(1)');
  });
});

describe('parseExpression', () => {
  it('lists the names an expression reads', () => {
    expect(referencedNames(parseExpression('params.a == 1 ? upper(services.db.url) : default(owner.name, workspace.name)'))).toEqual([
      ['params', 'a'],
      ['services', 'db', 'url'],
      ['owner', 'name'],
      ['workspace', 'name'],
    ]);
  });
});
