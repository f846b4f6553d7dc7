import { describe, expect, it } from 'vitest';
import { AppError } from '../../protocol/errors.ts';
import { templateSchema, type TemplateInput } from '../../protocol/template.ts';
import { coerceParameterValue, resolveParameters, withoutEphemeral } from './parameters.ts';

const spec = templateSchema.parse({
  name: 'params',
  workspace: { image: 'den/base:bookworm' },
  parameters: [
    { name: 'cpu', type: 'number', default: 2, options: [1, 2, 4] },
    { name: 'disk', type: 'number', default: 10, mutable: false, validation: { min: 5, max: 100 } },
    { name: 'memory', type: 'number', default: 4, validation: { monotonic: 'increasing' } },
    { name: 'greeting', type: 'string', default: 'hello', validation: { regex: '^[a-z]+$', message: 'use lowercase letters only' } },
    { name: 'debug', type: 'bool', default: false },
    { name: 'tags', type: 'list', default: [], options: ['a', 'b', 'c'] },
    { name: 'region', type: 'string', options: [{ value: 'eu', name: 'Europe' }, { value: 'us', name: 'USA' }] },
    { name: 'reset', type: 'bool', default: false, ephemeral: true },
  ],
} satisfies TemplateInput);

function parameterError(run: () => unknown): AppError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe('WORKSPACE_PARAMETERS_INVALID');
    return error as AppError;
  }
  throw new Error('expected WORKSPACE_PARAMETERS_INVALID');
}

describe('resolveParameters', () => {
  it('applies defaults and keeps given values', () => {
    expect(resolveParameters(spec, { region: 'eu' })).toEqual({
      cpu: 2, disk: 10, memory: 4, greeting: 'hello', debug: false, tags: [], region: 'eu', reset: false,
    });
  });

  it('coerces CLI strings to the declared types', () => {
    const values = resolveParameters(spec, { cpu: '4', disk: ' 20 ', debug: 'yes', tags: 'a, c', region: 'us', reset: 'true' });
    expect(values).toMatchObject({ cpu: 4, disk: 20, debug: true, tags: ['a', 'c'], region: 'us', reset: true });
    expect(resolveParameters(spec, { region: 'us', tags: '["b"]' }).tags).toEqual(['b']);
  });

  it('collects every violation, naming each parameter', () => {
    const error = parameterError(() => resolveParameters(spec, { cpu: 3, disk: 'big', greeting: 'Hi!', tags: ['a', 'z'], nope: 1 }));
    const fields = error.validations!.map((v) => v.field).sort();
    expect(fields).toEqual(['params.cpu', 'params.disk', 'params.greeting', 'params.nope', 'params.region', 'params.tags']);
    expect(error.message).toContain('params.cpu must be one of 1, 2, 4 (got 3)');
    expect(error.message).toContain('params.disk must be a number (got "big")');
    expect(error.message).toContain('params.greeting is invalid: use lowercase letters only');
    expect(error.message).toContain('params.nope is not a parameter of this template');
    expect(error.message).toContain('params.region is required');
    expect(error.message).toContain('params.tags must be a list of "a", "b", "c" (got "z")');
  });

  it('refuses values too long to be settings', () => {
    expect(parameterError(() => resolveParameters(spec, { region: 'eu', greeting: 'a'.repeat(10_001) })).message).toContain('params.greeting is too long');
  });

  it('checks min and max', () => {
    expect(parameterError(() => resolveParameters(spec, { region: 'eu', disk: 2 })).message).toContain('params.disk must be at least 5 (got 2)');
    expect(parameterError(() => resolveParameters(spec, { region: 'eu', disk: 101 })).message).toContain('at most 100');
  });

  it.each([
    ['number', 'abc'], ['number', ''], ['number', null], ['number', {}], ['bool', 'maybe'], ['bool', 2], ['list', '[1'], ['list', { a: 1 }], ['list', [[1]]], ['string', null], ['string', ['x']],
  ] as const)('refuses a %s parameter given %j', (type, raw) => {
    expect('problem' in coerceParameterValue({ name: 'p', type, mutable: true, ephemeral: false }, raw)).toBe(true);
  });

  it('keeps previous values on update and lets mutable ones change', () => {
    const previous = { cpu: 4, disk: 20, memory: 8, greeting: 'hey', debug: true, tags: ['b'], region: 'us' };
    expect(resolveParameters(spec, {}, previous)).toEqual({ ...previous, reset: false });
    expect(resolveParameters(spec, { cpu: 1 }, previous).cpu).toBe(1);
  });

  it('refuses to change an immutable parameter on update but accepts the same value', () => {
    const previous = { disk: 20, region: 'us' };
    const error = parameterError(() => resolveParameters(spec, { disk: 30 }, previous));
    expect(error.message).toContain('params.disk cannot change after the workspace is created (it is 20)');
    expect(resolveParameters(spec, { disk: '20' }, previous).disk).toBe(20);
  });

  it('lets a monotonic parameter move only one way', () => {
    const previous = { memory: 8, region: 'us' };
    expect(parameterError(() => resolveParameters(spec, { memory: 4 }, previous)).message).toContain('params.memory can only increase; it is 8 now');
    expect(resolveParameters(spec, { memory: 16 }, previous).memory).toBe(16);
  });

  it('never takes ephemeral values from the previous build', () => {
    expect(resolveParameters(spec, {}, { region: 'eu', reset: true }).reset).toBe(false);
  });

  it('reports a stored value that no longer fits a new version', () => {
    const error = parameterError(() => resolveParameters(spec, {}, { region: 'mars' }));
    expect(error.message).toContain('params.region must be one of "eu", "us" (got "mars")');
  });

  it('ignores stored values of parameters the new version dropped', () => {
    expect(resolveParameters(spec, {}, { region: 'eu', removed: 1 })).not.toHaveProperty('removed');
  });

  it('treats __proto__ in the request as an unknown parameter, not as a prototype', () => {
    const given = JSON.parse('{"__proto__": {"polluted": true}, "region": "eu"}');
    expect(parameterError(() => resolveParameters(spec, given)).validations![0].field).toBe('params.__proto__');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe('withoutEphemeral', () => {
  it('drops ephemeral values before they are stored', () => {
    const values = resolveParameters(spec, { region: 'eu', reset: true });
    expect(withoutEphemeral(spec, values)).not.toHaveProperty('reset');
    expect(withoutEphemeral(spec, values)).toHaveProperty('cpu', 2);
  });
});
