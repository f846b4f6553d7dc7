import { describe, expect, it } from 'vitest';
import { templateSchema, type TemplateInput } from '../../protocol/template.ts';
import { planAgents } from '../runtimes/driver.ts';
import { dependencyOrder, envName, planWorkspace, readyTimeoutMs, type PlanInput } from './plan.ts';

const workspace = { id: 'ws-1', name: 'demo', ownerId: 'u-1', ownerName: 'alice' };

function input(template: TemplateInput, overrides: Partial<PlanInput> = {}): PlanInput {
  return {
    spec: templateSchema.parse(template),
    params: {},
    workspace,
    owner: { id: 'u-1', name: 'alice', displayName: 'Alice' },
    endpoints: {},
    accessUrl: 'http://127.0.0.1:7080',
    agentDelivery: ['image', 'volume'],
    ...overrides,
  };
}

const nodePostgres: TemplateInput = {
  name: 'node-postgres',
  parameters: [
    { name: 'cpu', type: 'number', default: 2, options: [1, 2, 4] },
    { name: 'disk', type: 'number', default: 10 },
    { name: 'greeting', type: 'string', default: 'hi' },
  ],
  workspace: {
    image: 'den/node:24',
    resources: { cpu: '${{ params.cpu }}', memory: '4Gi', pids: 512 },
    home: { size: '${{ params.disk }}Gi' },
    env: { DATABASE_URL: 'postgres://${{ services.db.host }}:${{ services.db.port }}/app', GREETING: '${{ params.greeting }} ${{ owner.name }}' },
    startup: [
      { name: 'install', run: 'echo ${{ workspace.name }}', timeout: '2m' },
      { name: 'watch', run: 'sleep 1', blocking: false },
    ],
    apps: [{ name: 'code-server', port: 13337 }],
  },
  environment: {
    services: {
      api: { image: 'den/node:24', command: 'npm run dev', ports: [{ port: 3000, preview: true }], dependsOn: ['db'], env: { DB: '${{ services.db.url }}' } },
      db: {
        image: 'den/postgres:15', ports: [{ port: 5432 }], readiness: { tcp: 5432, timeout: '30s', interval: '500ms' },
        volumes: [{ name: 'data', path: '/var/lib/postgresql/data', size: '1Gi' }],
      },
    },
  },
};

const endpoints = { db: { 5432: { host: '127.0.0.1', port: 40001 } }, api: { 3000: { host: '127.0.0.1', port: 40002 } } };

describe('planWorkspace', () => {
  it('evaluates expressions with params, workspace, owner and services', () => {
    const { plan } = planWorkspace(input(nodePostgres, { params: { cpu: 4, disk: 20, greeting: 'hello' }, endpoints }));
    expect(plan.env.DATABASE_URL).toBe('postgres://127.0.0.1:40001/app');
    expect(plan.env.GREETING).toBe('hello alice');
    expect(plan.services.find((s) => s.name === 'api')!.env.DB).toBe('http://127.0.0.1:40001');
  });

  it('converts sizes and cpu to numbers', () => {
    const { plan } = planWorkspace(input(nodePostgres, { params: { cpu: 4, disk: 20, greeting: 'x' }, endpoints }));
    expect(plan.resources).toEqual({ cpu: 4, memoryBytes: 4 * 1024 ** 3, pids: 512 });
    expect(plan.home.sizeBytes).toBe(20 * 1024 ** 3);
    expect(plan.services.find((s) => s.name === 'db')!.volumes[0].sizeBytes).toBe(1024 ** 3);
  });

  it('sets den variables and one DEN_SERVICE_<NAME>_URL per service with a port', () => {
    const { plan } = planWorkspace(input(nodePostgres, { params: { cpu: 2, disk: 10, greeting: 'x' }, endpoints }));
    expect(plan.env).toMatchObject({
      DEN_WORKSPACE_NAME: 'demo',
      DEN_WORKSPACE_ID: 'ws-1',
      DEN_OWNER: 'alice',
      DEN_SERVICE_DB_URL: 'http://127.0.0.1:40001',
      DEN_SERVICE_API_URL: 'http://127.0.0.1:40002',
    });
  });

  it('orders services so dependencies come first', () => {
    const { plan } = planWorkspace(input(nodePostgres, { params: { cpu: 2, disk: 10, greeting: 'x' }, endpoints }));
    expect(plan.services.map((s) => s.name)).toEqual(['db', 'api']);
  });

  it('turns a command string into sh -c and durations into milliseconds', () => {
    const { plan } = planWorkspace(input(nodePostgres, { params: { cpu: 2, disk: 10, greeting: 'x' }, endpoints }));
    const api = plan.services.find((s) => s.name === 'api')!;
    const db = plan.services.find((s) => s.name === 'db')!;
    expect(api.command).toEqual(['sh', '-c', 'npm run dev']);
    expect(api.ports).toEqual([{ port: 3000, preview: true }]);
    expect(db.readiness).toEqual({ tcp: 5432, timeoutMs: 30_000, intervalMs: 500 });
  });

  it('builds the agent manifest with startup scripts, apps and the same env', () => {
    const { plan, manifest } = planWorkspace(input(nodePostgres, { params: { cpu: 2, disk: 10, greeting: 'x' }, endpoints }));
    expect(manifest.startupScripts).toEqual([
      { name: 'install', run: 'echo demo', timeoutMs: 120_000, blocking: true },
      { name: 'watch', run: 'sleep 1', timeoutMs: 300_000, blocking: false },
    ]);
    expect(manifest.apps).toEqual([{ name: 'code-server', port: 13337 }]);
    expect(manifest.env).toEqual(plan.env);
    expect(plan.agent).toEqual({ name: 'main', url: 'http://127.0.0.1:7080', revision: expect.stringMatching(/^[0-9a-f]{32}$/), delivery: { kind: 'image' } });
    expect(readyTimeoutMs(manifest, 1_000)).toBe(121_000);
  });

  const params = { cpu: 2, disk: 10, greeting: 'x' };

  it('names the agent token as a secret and keeps its value out of the plan, so planning twice gives the same plan', () => {
    const first = planWorkspace(input(nodePostgres, { params, endpoints }));
    expect(first.plan.secrets).toEqual([{ name: 'agent-token', env: 'DEN_AGENT_TOKEN', agent: 'main' }]);
    expect(planWorkspace(input(nodePostgres, { params, endpoints })).plan).toEqual(first.plan);
  });

  it('changes the agent revision when what the agent is told changes (a startup script), and only then', () => {
    const base = planWorkspace(input(nodePostgres, { params, endpoints })).plan.agent.revision;
    const edited = { ...nodePostgres, workspace: { ...nodePostgres.workspace, startup: [{ name: 'install', run: 'echo changed' }] } };
    expect(planWorkspace(input(edited, { params, endpoints })).plan.agent.revision).not.toBe(base);
    expect(planWorkspace(input(nodePostgres, { params, endpoints })).plan.agent.revision).toBe(base);
  });

  it('lists an agent beside each service that asks for one, each with its own token secret and manifest', () => {
    const template: TemplateInput = {
      name: 'agents',
      workspace: { image: 'den/node:24', startup: [{ name: 'hello', run: 'echo hi' }] },
      environment: { services: { api: { image: 'den/node:24', command: 'node api.js', agent: true }, db: { image: 'postgres:16' } } },
    };
    const { plan, manifests } = planWorkspace(input(template));
    expect(planAgents(plan).map((agent) => agent.name)).toEqual(['main', 'api']);
    expect(plan.services.find((s) => s.name === 'db')!.agent).toBeUndefined();
    expect(plan.secrets).toEqual([
      { name: 'agent-token', env: 'DEN_AGENT_TOKEN', agent: 'main' },
      { name: 'agent-token.api', env: 'DEN_AGENT_TOKEN', agent: 'api' },
    ]);
    // the service's agent runs no startup scripts: those are the workspace's
    expect(manifests.api).toEqual({ env: {}, startupScripts: [], apps: [] });
    expect(manifests.main.startupScripts).toHaveLength(1);
    expect(plan.services[0].agent!.revision).not.toBe(plan.agent.revision);
  });

  it('delivers the agent by image only to den\'s images, else the first other way the runtime offers', () => {
    const template: TemplateInput = {
      name: 'delivery',
      workspace: { image: 'den/base:bookworm' },
      environment: { services: { api: { image: 'debian:12', command: 'sleep 1d', agent: true } } },
    };
    const docker = planWorkspace(input(template, { agentDelivery: ['image', 'volume'] })).plan;
    expect(docker.agent.delivery).toEqual({ kind: 'image' });
    expect(docker.services[0].agent!.delivery).toEqual({ kind: 'volume' });
    expect(planWorkspace(input(template, { agentDelivery: ['path'] })).plan.agent.delivery).toEqual({ kind: 'path' });

    // a runtime that downloads (Kubernetes init containers): den's bundle route and its checksum
    const agentDownload = { url: 'http://127.0.0.1:7080/api/v1/agent/bundle', sha256: 'ab'.repeat(32) };
    const k8s = planWorkspace(input(template, { agentDelivery: ['image', 'download'], agentDownload })).plan;
    expect(k8s.agent.delivery).toEqual({ kind: 'image' });
    expect(k8s.services[0].agent!.delivery).toEqual({ kind: 'download', ...agentDownload });

    // nothing fits: refused with a sentence naming the field and the image
    expect(() => planWorkspace(input(template, { agentDelivery: ['image'] }))).toThrow(expect.objectContaining({
      code: 'RUNTIME_CAPABILITY_MISSING',
      message: expect.stringContaining("environment.services.api uses image debian:12, which does not carry den's agent"),
    }));
  });

  it('keeps den variables even when the template sets the same names', () => {
    const { plan } = planWorkspace(input({ name: 't', workspace: { image: 'x', env: { DEN_OWNER: 'mallory' } } }));
    expect(plan.env.DEN_OWNER).toBe('alice');
  });

  it('says when the template has one-off tasks or tests (a kubernetes quota leaves room for one), and only then', () => {
    const params = { cpu: 2, disk: 10, greeting: 'x' };
    expect(planWorkspace(input(nodePostgres, { params, endpoints })).plan.oneOffRuns).toBeUndefined();
    const withTest = { ...nodePostgres, environment: { ...nodePostgres.environment, tests: { e2e: { service: 'api', run: 'npm test', oneOff: true } } } };
    expect(planWorkspace(input(withTest, { params, endpoints })).plan.oneOffRuns).toBe(true);
  });

  it('is pure: the same input gives the same plan', () => {
    const a = planWorkspace(input(nodePostgres, { params: { cpu: 2, disk: 10, greeting: 'x' }, endpoints }));
    const b = planWorkspace(input(nodePostgres, { params: { cpu: 2, disk: 10, greeting: 'x' }, endpoints }));
    expect(a).toEqual(b);
  });

  it('fails with EXPRESSION_INVALID naming the field when a size does not evaluate to a size', () => {
    const template: TemplateInput = {
      name: 't',
      parameters: [{ name: 'disk', type: 'string', default: 'lots' }],
      workspace: { image: 'x', home: { size: '${{ params.disk }}' } },
    };
    expect(() => planWorkspace(input(template, { params: { disk: 'lots' } }))).toThrow(
      expect.objectContaining({ code: 'EXPRESSION_INVALID', message: expect.stringContaining('workspace.home.size') }),
    );
  });

  it('fails with EXPRESSION_INVALID for unknown names', () => {
    const template: TemplateInput = { name: 't', workspace: { image: 'x', env: { A: '${{ params.nope }}' } } };
    expect(() => planWorkspace(input(template))).toThrow(expect.objectContaining({ code: 'EXPRESSION_INVALID' }));
  });
});

describe('envName', () => {
  it('uppercases and replaces everything but letters and digits with _', () => {
    expect(envName('my-api')).toBe('MY_API');
    expect(envName('db2')).toBe('DB2');
  });
});

describe('dependencyOrder', () => {
  it('puts every service after its dependencies and keeps declaration order otherwise', () => {
    expect(dependencyOrder({ web: { dependsOn: ['api'] }, api: { dependsOn: ['db', 'cache'] }, db: {}, cache: {} }))
      .toEqual(['db', 'cache', 'api', 'web']);
  });

  it('refuses a cycle with TEMPLATE_INVALID', () => {
    expect(() => dependencyOrder({ a: { dependsOn: ['b'] }, b: { dependsOn: ['a'] } })).toThrow(expect.objectContaining({ code: 'TEMPLATE_INVALID' }));
  });
});

describe('planWorkspace paths', () => {
  const withWorkdir = (workdir: string, volumePath = '/data'): TemplateInput => ({
    name: 'paths',
    parameters: [{ name: 'dir', type: 'string', default: 'app' }],
    workspace: { image: 'x' },
    environment: { services: { api: { command: 'node api.js', workdir, volumes: [{ name: 'data', path: volumePath }] } } },
  });

  it('refuses a workdir whose evaluated value leaves the home with TEMPLATE_PATH_INVALID', () => {
    const plan = () => planWorkspace(input(withWorkdir('~/${{ params.dir }}'), { params: { dir: '../../../tmp/x' } }));
    expect(plan).toThrow(expect.objectContaining({
      code: 'TEMPLATE_PATH_INVALID',
      message: expect.stringContaining('environment.services.api.workdir is "~/../../../tmp/x"'),
    }));
  });

  it('refuses paths of versions stored before push checked them, and evaluates volume paths', () => {
    const stored = input(withWorkdir('~/app'));
    stored.spec.environment!.services!.api.volumes![0].path = '/';
    expect(() => planWorkspace(stored)).toThrow(expect.objectContaining({ code: 'TEMPLATE_PATH_INVALID', message: expect.stringContaining('volumes[0].path') }));
    const evaluated = planWorkspace(input(withWorkdir('~/${{ params.dir }}', '/srv/${{ params.dir }}'), { params: { dir: 'web' } }));
    expect(evaluated.plan.services[0]).toMatchObject({ workdir: '~/web', volumes: [{ name: 'data', path: '/srv/web' }] });
  });
});
