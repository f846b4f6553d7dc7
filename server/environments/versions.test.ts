import { describe, expect, it } from 'vitest';
import { templateSchema, type EnvironmentSpec } from '../../protocol/template.ts';
import type { ServicePlan } from '../runtimes/driver.ts';
import { sectionHashes } from './inputs.ts';
import { canonicalJson, declaredInputs, entryVersions, serviceVersions } from './versions.ts';

const service = (name: string, extra: Partial<ServicePlan> = {}): ServicePlan => ({
  name, image: 'den/node:24', command: ['node', 'server.js'], env: { A: '1' }, ports: [{ port: 3000, preview: false }], volumes: [], dependsOn: [], ...extra,
});

const environment = (extra: Partial<EnvironmentSpec> = {}): EnvironmentSpec => templateSchema.parse({
  name: 'v',
  workspace: { image: 'x' },
  environment: {
    services: { db: { command: 'db' }, api: { command: 'api', dependsOn: ['db'], agent: true } },
    tasks: { migrate: { service: 'api', run: 'migrate', inputs: ['~/app/migrations'] }, seed: { service: 'api', run: 'seed', dependsOn: ['migrate'] } },
    tests: { smoke: { service: 'api', run: 'smoke', dependsOn: ['seed'], inputs: ['~/app/test'] } },
    ...extra,
  },
}).environment!;

const inputs = { '~/app/migrations': 'm1', '~/app/test': 't1' };

describe('environment versions', () => {
  it('are the same for the same inputs, whatever the order of object keys', () => {
    const a = serviceVersions([service('db', { env: { A: '1', B: '2' } }), service('api', { dependsOn: ['db'] })]);
    const b = serviceVersions([service('api', { dependsOn: ['db'] }), service('db', { env: { B: '2', A: '1' } })]);
    expect(a).toEqual(b);
    expect(a.db).toMatch(/^[0-9a-f]{16}$/);
    expect(canonicalJson({ b: 1, a: [{ d: 1, c: 2 }] })).toBe('{"a":[{"c":2,"d":1}],"b":1}');
  });

  it('change for a service whose dependency changed, and only for what depends on the change', () => {
    const before = serviceVersions([service('db'), service('api', { dependsOn: ['db'] }), service('cache')]);
    const after = serviceVersions([service('db', { env: { A: '2' } }), service('api', { dependsOn: ['db'] }), service('cache')]);
    expect(after.db).not.toBe(before.db);
    expect(after.api).not.toBe(before.api);
    expect(after.cache).toBe(before.cache);
  });

  it('change a task when its input files change, and every task and test that depends on it', () => {
    const services = { db: 'd1', api: 'a1' };
    const before = entryVersions(environment(), services, inputs);
    const after = entryVersions(environment(), services, { ...inputs, '~/app/migrations': 'm2' });
    expect(after.tasks.migrate).not.toBe(before.tasks.migrate);
    expect(after.tasks.seed).not.toBe(before.tasks.seed);
    expect(after.tests.smoke).not.toBe(before.tests.smoke);
    // the test's own input changing moves the test alone
    const testOnly = entryVersions(environment(), services, { ...inputs, '~/app/test': 't2' });
    expect(testOnly.tasks).toEqual(before.tasks);
    expect(testOnly.tests.smoke).not.toBe(before.tests.smoke);
  });

  it('change a task when the service it runs in changes, not when another service does', () => {
    const before = entryVersions(environment(), { db: 'd1', api: 'a1' }, inputs);
    expect(entryVersions(environment(), { db: 'd2', api: 'a1' }, inputs)).toEqual(before);
    expect(entryVersions(environment(), { db: 'd1', api: 'a2' }, inputs).tasks.migrate).not.toBe(before.tasks.migrate);
  });

  it('change a test that moves into a one-off container, and nothing else', () => {
    const services = { db: 'd1', api: 'a1' };
    const before = entryVersions(environment(), services, inputs);
    const oneOff = environment({ tests: { smoke: { service: 'api', run: 'smoke', dependsOn: ['seed'], inputs: ['~/app/test'], oneOff: true, timeout: '10m' } } });
    const after = entryVersions(oneOff, services, inputs);
    expect(after.tests.smoke).not.toBe(before.tests.smoke);
    expect(after.tasks).toEqual(before.tasks);
  });

  it('lists every declared input once, sorted', () => {
    expect(declaredInputs(environment())).toEqual(['~/app/migrations', '~/app/test']);
  });

  it('hash each input section of the workspace listing; a missing path differs from an empty one', () => {
    const listing = '== app/migrations\nabc  app/migrations/1.sql\n== app/test\nmissing\n';
    const hashes = sectionHashes(listing, ['~/app/migrations', '~/app/test']);
    expect(hashes['~/app/migrations']).not.toBe(hashes['~/app/test']);
    const changed = sectionHashes('== app/migrations\nabd  app/migrations/1.sql\n== app/test\nmissing\n', ['~/app/migrations', '~/app/test']);
    expect(changed['~/app/migrations']).not.toBe(hashes['~/app/migrations']);
    expect(changed['~/app/test']).toBe(hashes['~/app/test']);
    expect(sectionHashes('== app/test\n', ['~/app/test'])['~/app/test']).not.toBe(hashes['~/app/test']);
  });
});

describe('template checks of tasks and tests', () => {
  const problems = (env: unknown) => {
    const result = templateSchema.safeParse({ name: 'v', workspace: { image: 'x' }, environment: env });
    return result.success ? [] : result.error.issues.map((issue) => issue.message);
  };

  it('refuses a task in a service without an agent, an unknown dependency and a cycle, each with a sentence', () => {
    expect(problems({ services: { api: { command: 'x' } }, tasks: { seed: { service: 'api', run: 'x' } } }).join())
      .toContain("add `agent: true` to service 'api'");
    expect(problems({ services: { api: { command: 'x', agent: true } }, tests: { t: { service: 'api', run: 'x', dependsOn: ['nope'] } } }).join())
      .toContain("depends on task 'nope', which does not exist");
    expect(problems({ services: { api: { command: 'x', agent: true } }, tasks: { a: { service: 'api', run: 'x', dependsOn: ['b'] }, b: { service: 'api', run: 'x', dependsOn: ['a'] } } }).join())
      .toContain('Tasks depend on each other in a cycle');
  });
});
