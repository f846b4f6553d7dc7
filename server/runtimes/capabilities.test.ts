import { describe, expect, it } from 'vitest';
import { isAppError } from '../../protocol/errors.ts';
import { templateSchema, type TemplateInput } from '../../protocol/template.ts';
import { assertCapabilities, missingCapabilities, type RuntimeCapabilities } from './capabilities.ts';
import { PROCESS_CAPABILITIES } from './process/driver.ts';

const everything: RuntimeCapabilities = {
  serviceImages: 'enforced', serviceVolumes: 'enforced', resources: 'enforced', dependsOn: 'enforced', sync: 'enforced', ports: 'enforced', serviceAgents: 'enforced', oneOffRuns: 'enforced',
  restartAfterSync: 'enforced',
};

const demanding: TemplateInput = {
  name: 'demanding',
  workspace: { image: 'den/base', resources: { cpu: 2 } },
  environment: {
    services: {
      db: { image: 'den/postgres:15', ports: [{ port: 5432 }], volumes: [{ name: 'data', path: '/data' }] },
      api: { command: ['node', 'server.js'], dependsOn: ['db'], sync: [{ from: '~/app', to: '/app' }], agent: true },
    },
  },
};

describe('missingCapabilities', () => {
  it('finds nothing missing on a runtime that has every feature', () => {
    expect(missingCapabilities('docker', everything, templateSchema.parse(demanding))).toEqual([]);
  });

  it('names each unsupported feature with the field that needs it and the runtime', () => {
    const lacking: RuntimeCapabilities = { ...everything, serviceImages: 'unsupported', dependsOn: 'unsupported', sync: 'unsupported', serviceAgents: 'unsupported' };
    const missing = missingCapabilities('kubernetes', lacking, templateSchema.parse(demanding));
    expect(missing.map((m) => [m.feature, m.field])).toEqual([
      ['serviceImages', 'environment.services.db'],
      ['dependsOn', 'environment.services.api.dependsOn'],
      ['sync', 'environment.services.api.sync'],
      ['serviceAgents', 'environment.services.api.agent'],
    ]);
    expect(missing[3].message).toBe('environment.services.api.agent asks for an agent beside the service, which the kubernetes runtime does not support (serviceAgents).');
    expect(missing[0].message).toBe('environment.services.db is given only as an image, without a command, which the kubernetes runtime does not support (serviceImages).');
  });

  it('accepts what a runtime ignores: the process runtime runs node-api-like templates without limits or volumes', () => {
    const api = { ...demanding.environment!.services!.api, sync: [{ from: '~/app', to: '~/app' }, { from: 'lib/', to: '~/lib' }] };
    const processable = { ...demanding, environment: { services: { db: { ...demanding.environment!.services!.db, command: 'node db.js' }, api } } };
    expect(missingCapabilities('process', PROCESS_CAPABILITIES, templateSchema.parse(processable))).toEqual([]);
  });

  it('refuses afterSync: restart where the runtime cannot restart a service in place, with a sentence', () => {
    const restarting = templateSchema.parse({ ...demanding, workspace: { image: 'den/base' }, environment: { services: { api: { ...demanding.environment!.services!.api, dependsOn: [], afterSync: 'restart' } } } });
    expect(missingCapabilities('docker', everything, restarting)).toEqual([]);
    // (the process runtime also refuses this sync into another folder: the test after this one)
    expect(missingCapabilities('process', PROCESS_CAPABILITIES, restarting).filter((m) => m.feature === 'restartAfterSync')).toEqual([{
      feature: 'restartAfterSync', field: 'environment.services.api.afterSync',
      message: 'environment.services.api.afterSync restarts the service\'s process after each sync, which the process runtime does not support (restartAfterSync).',
    }]);
  });

  it('refuses a one-off task or test on the process runtime with a sentence naming the entry, and lets an agent-run one through', () => {
    const oneOff = {
      ...demanding,
      environment: {
        services: { api: { command: 'node server.js', agent: true } },
        tasks: { migrate: { service: 'api', run: 'npm run migrate' } },
        tests: { e2e: { service: 'api', run: 'npm test', oneOff: true } },
      },
    };
    const missing = missingCapabilities('process', PROCESS_CAPABILITIES, templateSchema.parse(oneOff));
    expect(missing.map((m) => [m.feature, m.field])).toEqual([['oneOffRuns', 'environment.tests.e2e.oneOff']]);
    expect(missing[0].message).toBe("environment.tests.e2e.oneOff runs in a one-off container from service api's image, which the process runtime does not support (oneOffRuns).");
    expect(missingCapabilities('docker', everything, templateSchema.parse(oneOff))).toEqual([]);
  });

  it('refuses, on the process runtime, a sync into another folder than its own: nothing would copy it there', () => {
    const api = { ...demanding.environment!.services!.api, sync: [{ from: '~/app', to: '~/app' }, { from: '~/app', to: '/app' }, { from: '~/src', to: '~/srv' }] };
    const template = { ...demanding, environment: { services: { db: { ...demanding.environment!.services!.db, command: 'node db.js' }, api } } };
    const missing = missingCapabilities('process', PROCESS_CAPABILITIES, templateSchema.parse(template));
    expect(missing.map((m) => [m.feature, m.field])).toEqual([['sync', 'environment.services.api.sync[1]'], ['sync', 'environment.services.api.sync[2]']]);
    expect(missing[0].message).toBe('environment.services.api.sync[1] syncs ~/app into /app, which the process runtime cannot do: its services run in the workspace\'s own home and see its files as they are, so only a folder synced onto the same path (to: ~/app) works there.');
  });

  it('throws RUNTIME_CAPABILITY_MISSING with one sentence per feature and a validation per field', () => {
    let thrown: unknown;
    try {
      assertCapabilities({ name: 'process', capabilities: PROCESS_CAPABILITIES }, templateSchema.parse(demanding));
    } catch (error) {
      thrown = error;
    }
    expect(isAppError(thrown) && thrown.code).toBe('RUNTIME_CAPABILITY_MISSING');
    const error = thrown as { message: string; validations: { field: string }[] };
    expect(error.message).toContain('environment.services.db is given only as an image, without a command, which the process runtime does not support (serviceImages).');
    expect(error.validations.map((v) => v.field)).toEqual(['environment.services.db', 'environment.services.api.sync[0]']);
  });
});
