import { describe, expect, it } from 'vitest';
import { servicePreviews } from './previews.ts';
import { formatBytes, parseBytes, parseCpu, parseDuration, templateJsonSchema, templateSchema, type TemplateInput } from './template.ts';

/** The sketch from DESIGN.md's template section, verbatim in content. */
const designSketch: TemplateInput = {
  name: 'node-postgres',
  displayName: 'Node.js + PostgreSQL',
  parameters: [
    { name: 'cpu', type: 'number', default: 2, options: [1, 2, 4] },
    { name: 'disk', type: 'number', default: 10, mutable: false, validation: { min: 5, max: 100 } },
  ],
  workspace: {
    image: 'den/node:24',
    resources: { cpu: '${{ params.cpu }}', memory: '4Gi' },
    home: { size: '${{ params.disk }}Gi' },
    env: { DATABASE_URL: '${{ services.db.url }}' },
    startup: [{ name: 'install', run: 'cd ~/app && npm ci' }],
    apps: [{ name: 'code-server', port: 13337, share: 'owner' }],
  },
  environment: {
    services: {
      db: {
        image: 'den/postgres:15',
        ports: [{ port: 5432 }],
        readiness: { tcp: 5432 },
        volumes: [{ name: 'data', path: '/var/lib/postgresql/data', size: '1Gi' }],
      },
      api: {
        image: 'den/node:24',
        command: ['npm', 'run', 'dev'],
        agent: true,
        workdir: '/app',
        sync: [{ from: '~/app', to: '/app', exclude: ['node_modules'] }],
        ports: [{ port: 3000, preview: true }],
        dependsOn: ['db'],
      },
    },
    tasks: { migrate: { service: 'api', run: 'npm run migrate' } },
    tests: { e2e: { service: 'api', run: 'npm run test:e2e' } },
  },
  lifecycle: { autostop: '2h', maxLifetime: '24h' },
};

function problems(doc: unknown): string[] {
  const result = templateSchema.safeParse(doc);
  return result.success ? [] : result.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
}

const minimal = { name: 'x', workspace: { image: 'img' } };

describe('templateSchema', () => {
  it('accepts the DESIGN.md sketch and applies defaults', () => {
    const spec = templateSchema.parse(designSketch);
    expect(spec.parameters[0]).toMatchObject({ mutable: true, ephemeral: false });
    expect(spec.workspace.startup?.[0].blocking).toBe(true);
    expect(spec.environment?.services?.api.ports?.[0].preview).toBe(true);
    expect(spec.environment?.services?.db.readiness).toMatchObject({ timeout: '60s', interval: '1s' });
    expect(spec.lifecycle?.autostartAllowed).toBe(true);
  });

  it('allows SSH agent forwarding only when workspace.ssh.agentForwarding says so, and refuses a value that is not a boolean', () => {
    expect(templateSchema.parse(minimal).workspace.ssh).toBeUndefined();
    expect(templateSchema.parse({ ...minimal, workspace: { image: 'i', ssh: {} } }).workspace.ssh).toEqual({ agentForwarding: false });
    expect(templateSchema.parse({ ...minimal, workspace: { image: 'i', ssh: { agentForwarding: true } } }).workspace.ssh).toEqual({ agentForwarding: true });
    expect(problems({ ...minimal, workspace: { image: 'i', ssh: { agentForwarding: 'yes' } } })[0]).toContain('workspace.ssh.agentForwarding');
    expect(problems({ ...minimal, workspace: { image: 'i', ssh: { x11: true } } })[0]).toContain('workspace.ssh');
  });

  it('refuses unknown fields at every level', () => {
    expect(problems({ ...minimal, extra: 1 })).toEqual([': Unrecognized key: "extra"']);
    expect(problems({ ...minimal, workspace: { image: 'i', startup: [{ name: 'a', run: 'b', timout: '1s' }] } })[0]).toContain('workspace.startup.0');
  });

  it.each([
    ['Upper', 'DNS-safe'], ['-dash', 'DNS-safe'], ['a'.repeat(64), 'at most 63'], ['constructor', 'DNS-safe'],
  ])('refuses the template name %j', (name, fragment) => {
    expect(problems({ ...minimal, name }).join()).toContain(fragment);
  });

  it('checks sizes, durations and CPU values but lets expressions through', () => {
    expect(problems({ ...minimal, workspace: { image: 'i', resources: { memory: '4GB' } } }).join()).toContain('512Mi or 4Gi');
    expect(problems({ ...minimal, workspace: { image: 'i', resources: { cpu: 'two' } } }).join()).toContain('number of cores');
    expect(problems({ ...minimal, workspace: { image: 'i', startup: [{ name: 'a', run: 'b', timeout: '30' }] } }).join()).toContain('30s');
    expect(problems({ ...minimal, workspace: { image: 'i', resources: { cpu: '500m', memory: '${{ params.m }}Mi', pids: 100 } } })).toEqual([]);
  });

  it('checks parameter defaults against their type, options and validation', () => {
    const withParam = (parameter: object) => ({ ...minimal, parameters: [parameter] });
    expect(problems(withParam({ name: 'a', type: 'number', default: 'x' })).join()).toContain('default must be a number');
    expect(problems(withParam({ name: 'a', type: 'number', default: 3, options: [1, 2] })).join()).toContain('must be one of 1, 2 (got 3)');
    expect(problems(withParam({ name: 'a', type: 'number', default: 3, validation: { min: 5 } })).join()).toContain('at least 5');
    expect(problems(withParam({ name: 'a', type: 'string', options: [1] })).join()).toContain('must be strings');
    expect(problems(withParam({ name: 'a', type: 'number', validation: { min: 5, max: 1 } })).join()).toContain('swap them');
    expect(problems(withParam({ name: 'a', type: 'string', validation: { regex: '(' } })).join()).toContain('not a valid JavaScript regular expression');
    expect(problems(withParam({ name: 'a', type: 'string', validation: { monotonic: 'increasing' } })).join()).toContain('Only number parameters');
    for (const regex of ['^(a+)+$', '(\\w*)*x', '^(\\w+\\s?)+$', '([a-z]+){2,}', '(?:\\d+)*$']) {
      expect(problems(withParam({ name: 'a', type: 'string', validation: { regex } })).join(), regex).toContain('exponential time');
    }
    for (const regex of ['^[a-z0-9/_-]+$', '^(main|dev)$', '^v\\d+(\\.\\d+)*$', '^a{2,3}$', '^\\(x+\\)+$', '(x+y)*', '^([a-z]+-)*[a-z]+$']) {
      expect(problems(withParam({ name: 'a', type: 'string', validation: { regex } })), regex).toEqual([]);
    }
    expect(problems(withParam({ name: 'a', type: 'bool', ephemeral: true })).join()).toContain('needs a default');
    expect(problems(withParam({ name: '__proto__', type: 'bool' })).join()).toContain('parameters.0.name');
    expect(problems({ ...minimal, parameters: [{ name: 'a', type: 'bool' }, { name: 'a', type: 'bool' }] }).join()).toContain('declared twice');
  });

  it('checks service references, readiness and dependency cycles', () => {
    const env = (environment: object) => ({ ...minimal, environment });
    expect(problems(env({ services: { a: { command: 'x', dependsOn: ['b'] } } })).join()).toContain("depends on 'b', which does not exist");
    expect(problems(env({ services: { a: { command: 'x', dependsOn: ['a'] } } })).join()).toContain('cannot depend on itself');
    expect(problems(env({ services: { main: { command: 'x', agent: true } } })).join()).toContain("A service named 'main' cannot have an agent");
    expect(problems(env({ services: { main: { command: 'x' }, api: { command: 'y', agent: true } } }))).toEqual([]);
    expect(problems(env({ services: { a: { command: 'x', dependsOn: ['b'] }, b: { command: 'x', dependsOn: ['c'] }, c: { command: 'x', dependsOn: ['a'] } } })).join()).toContain('a -> b -> c -> a');
    expect(problems(env({ services: { a: {} } })).join()).toContain('needs an image or a command');
    expect(problems(env({ services: { a: { command: 'x', readiness: { tcp: 1, http: { port: 1 } }, ports: [{ port: 1 }] } } })).join()).toContain('exactly one of');
    expect(problems(env({ services: { a: { command: 'x', readiness: { tcp: 5432 } } } })).join()).toContain('does not list under ports');
    expect(problems(env({ services: { a: { command: 'x' } }, tasks: { seed: { service: 'b', run: 'x' } } })).join()).toContain("Task 'seed' runs in service 'b'");
    expect(problems(env({ services: { Bad_Name: { command: 'x' } } })).join()).toContain('environment.services.Bad_Name');
    // a service without an agent runs a task only in a one-off container from its image; the sentence offers both
    expect(problems(env({ services: { db: { image: 'pg' } }, tests: { t: { service: 'db', run: 'x' } } })).join())
      .toContain("Test 't' runs in service 'db', which has no agent to run it; add `agent: true` to service 'db', or add `oneOff: true` to the test");
    expect(problems(env({ services: { db: { image: 'pg' } }, tests: { t: { service: 'db', run: 'x', oneOff: true } } }))).toEqual([]);
    expect(problems(env({ services: { db: { image: 'pg' } }, tests: { t: { service: 'db', run: 'x', oneOff: 'yes' } } })).join()).toContain('oneOff');
  });

  it('names each previewed service port and refuses a preview named like an app or another preview', () => {
    const service = (ports: { port: number; name?: string; preview?: boolean }[]) => ({ command: 'x', ports });
    const one = { ...minimal, environment: { services: { api: service([{ port: 3000, preview: true }, { port: 9229 }]) } } };
    expect(servicePreviews(one)).toEqual([{ name: 'api', service: 'api', port: 3000 }]);
    const two = { ...minimal, environment: { services: { api: service([{ port: 3000, name: 'http', preview: true }, { port: 9229, preview: true }]) } } };
    expect(servicePreviews(two).map((preview) => preview.name)).toEqual(['api-http', 'api-9229']);
    expect(problems(one)).toEqual([]);
    expect(problems({ ...one, workspace: { image: 'i', apps: [{ name: 'api', port: 1 }] } }).join()).toContain("The preview URL of service 'api' is named 'api', like an app");
    const clash = { ...minimal, environment: { services: { 'api-http': service([{ port: 1, preview: true }]), api: service([{ port: 2, name: 'http', preview: true }, { port: 3, preview: true }]) } } };
    expect(problems(clash).join()).toContain("Two preview URLs are named 'api-http'");
  });

  it('takes one-way and two-way sync with an afterSync command, and refuses an unknown mode with a sentence', () => {
    const service = (extra: object) => ({ ...minimal, environment: { services: { api: { image: 'i', sync: [{ from: '~/app', to: '/app' }], ...extra } } } });
    const spec = templateSchema.parse(service({ afterSync: { run: 'kill -HUP 1' } }));
    expect(spec.environment?.services?.api).toMatchObject({ sync: [{ mode: 'one-way' }], afterSync: { run: 'kill -HUP 1' } });
    expect(problems(service({ afterSync: 'nothing' }))).toEqual([]);
    const twoWay = { ...minimal, environment: { services: { api: { image: 'i', sync: [{ from: '~/app', to: '/app', mode: 'two-way' }] } } } };
    expect(problems(twoWay)).toEqual([]);
    expect(templateSchema.parse(twoWay).environment?.services?.api?.sync?.[0]?.mode).toBe('two-way');
    const mirror = { ...minimal, environment: { services: { api: { image: 'i', sync: [{ from: '~/app', to: '/app', mode: 'mirror' }] } } } };
    expect(problems(mirror).join()).toContain('A sync mode is one-way');
  });

  it('takes afterSync: restart on a synced service with a command, and refuses it with a sentence otherwise', () => {
    const api = (extra: object) => ({ ...minimal, environment: { services: { api: { image: 'i', afterSync: 'restart', ...extra } } } });
    const sync = [{ from: '~/app', to: '/app' }];
    expect(problems(api({ command: ['node', 'server.js'], sync }))).toEqual([]);
    expect(templateSchema.parse(api({ command: ['node', 'server.js'], sync })).environment?.services?.api?.afterSync).toBe('restart');
    expect(problems(api({ sync })).join()).toContain("Service 'api' asks for afterSync: restart without a command");
    expect(problems(api({ command: ['node', 'server.js'] })).join()).toContain('syncs nothing, so it would never restart');
  });

  it('refuses duplicate app and startup script names', () => {
    const apps = [{ name: 'web', port: 1 }, { name: 'web', port: 2 }];
    expect(problems({ ...minimal, workspace: { image: 'i', apps } }).join()).toContain("App 'web' is declared twice");
  });
});

describe('templateJsonSchema', () => {
  it('describes the input document for editors', () => {
    const schema = templateJsonSchema() as { properties: Record<string, unknown>; required: string[]; additionalProperties: boolean; $schema: string };
    expect(schema.$schema).toContain('json-schema.org');
    expect(Object.keys(schema.properties)).toEqual(expect.arrayContaining(['name', 'parameters', 'workspace', 'environment', 'lifecycle']));
    expect(schema.required).toEqual(['name', 'workspace']);
    expect(schema.additionalProperties).toBe(false);
    expect(JSON.parse(JSON.stringify(schema))).toEqual(schema);
  });
});

describe('units', () => {
  it.each([['512Mi', 512 * 1024 ** 2], ['4Gi', 4 * 1024 ** 3], ['1.5Gi', 1.5 * 1024 ** 3], ['10G', 10e9], ['100', 100], [2048, 2048]] as const)(
    'parses the size %j',
    (text, bytes) => expect(parseBytes(text)).toBe(bytes),
  );
  it.each(['4GB', '', '-1', 'Gi', '1e9', '4 Gi x'])('refuses the size %j', (text) => expect(parseBytes(text)).toBeNull());
  it.each([['30s', 30_000], ['2h', 7_200_000], ['1h30m', 5_400_000], ['500ms', 500], ['1d', 86_400_000]] as const)(
    'parses the duration %j',
    (text, ms) => expect(parseDuration(text)).toBe(ms),
  );
  it.each(['30', '', 's', '1x', '-1s'])('refuses the duration %j', (text) => expect(parseDuration(text)).toBeNull());
  it('parses CPU amounts and formats sizes', () => {
    expect([parseCpu(2), parseCpu('0.5'), parseCpu('500m'), parseCpu('0'), parseCpu('x')]).toEqual([2, 0.5, 0.5, null, null]);
    expect([formatBytes(4 * 1024 ** 3), formatBytes(512 * 1024 ** 2), formatBytes(1000)]).toEqual(['4Gi', '512Mi', '1000']);
  });
});
