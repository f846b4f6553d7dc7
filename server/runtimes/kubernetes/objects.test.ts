import type { V1Deployment, V1Service } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import type { ServicePlan, WorkspacePlan } from '../driver.ts';
import { BAKED_AGENT, downloadedAgent } from './agent-delivery.ts';
import { dnsLabel, labelValue, names, podSpecHash, renderWorkspace, serviceGate, type RenderInput } from './objects.ts';

const ID = '0b5e0b0e-6f1c-4c43-9a52-2b8f4c1d9e77';

function plan(overrides: Partial<WorkspacePlan> = {}): WorkspacePlan {
  return {
    workspace: { id: ID, name: 'My_Workspace', ownerId: 'u1', ownerName: 'ada lovelace' },
    image: 'den/base:bookworm',
    resources: {},
    home: {},
    env: { A: '1' },
    agent: { name: 'main', url: 'http://den:7080', revision: 'r1', delivery: { kind: 'image' } },
    secrets: [{ name: 'agent-token', env: 'DEN_AGENT_TOKEN', agent: 'main' }],
    services: [],
    ...overrides,
  };
}

const db: ServicePlan = {
  name: 'db', image: 'den/postgres:15', env: { POSTGRES_PASSWORD: 'x' }, ports: [{ port: 5432, preview: false }], dependsOn: [],
  volumes: [{ name: 'data', path: '/var/lib/postgresql/data' }], readiness: { tcp: 5432, timeoutMs: 20_000, intervalMs: 100 },
};

function render(overrides: Partial<RenderInput> = {}) {
  return renderWorkspace({ instance: 'den', plan: plan({ services: [db] }), agentUrl: 'http://10.0.0.1:7080', agent: BAKED_AGENT, secretGeneration: 'g1', replicas: 1, ingressFrom: [], ...overrides });
}

describe('kubernetes objects', () => {
  it('names fit Kubernetes limits whatever the input', () => {
    expect(names.namespace('a'.repeat(63), ID).length).toBeLessThanOrEqual(63);
    expect(names.namespace('den', ID)).toBe(`den-${ID}`);
    expect(names.service('9lives')).toMatch(/^[a-z]/);
    expect(dnsLabel('Web_API.v2')).toBe('web-api-v2');
    expect(labelValue('ada lovelace!')).toBe('ada_lovelace');
    expect(labelValue('x'.repeat(80))).toHaveLength(63);
  });

  it('renders the same objects for the same plan, so a re-apply is a no-op', () => {
    expect(JSON.stringify(render())).toBe(JSON.stringify(render()));
  });

  it('changes only the workspace pod template when only the agent manifest changes', () => {
    const before = render();
    const after = render({ plan: plan({ services: [db], agent: { name: 'main', url: 'http://den:7080', revision: 'r2', delivery: { kind: 'image' } } }) });
    expect(podSpecHash(after.workspace)).not.toBe(podSpecHash(before.workspace));
    expect(JSON.stringify(after.services)).toBe(JSON.stringify(before.services));
    expect(JSON.stringify(after.base)).toBe(JSON.stringify(before.base));
  });

  it('runs the workspace non-root, without a service-account token, with the token from the Secret', () => {
    const spec = render().workspace.spec!;
    expect(spec.strategy?.type).toBe('Recreate');
    const pod = spec.template.spec!;
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.securityContext?.runAsNonRoot).toBe(true);
    const env = pod.containers[0].env!;
    expect(env.find((e) => e.name === 'DEN_AGENT_TOKEN')).toEqual({ name: 'DEN_AGENT_TOKEN', valueFrom: { secretKeyRef: { name: 'den-agent', key: 'agent-token' } } });
    expect(env.find((e) => e.name === 'DEN_AGENT_URL')?.value).toBe('http://10.0.0.1:7080');
  });

  it('renders a service as a Deployment with its probe and claim, and a Service by its name', () => {
    const [deployment, service] = render().services[0].objects as [V1Deployment, V1Service];
    const container = deployment.spec!.template.spec!.containers[0];
    expect(container.readinessProbe).toMatchObject({ tcpSocket: { port: 5432 }, periodSeconds: 1 });
    expect(container.env).toContainEqual({ name: 'PORT', value: '5432' });
    expect(deployment.spec!.template.spec!.volumes).toEqual([{ name: 'data', persistentVolumeClaim: { claimName: 'svc-db-data' } }]);
    expect(service.metadata?.name).toBe('db');
    expect(service.spec?.ports).toEqual([{ name: 'p5432', port: 5432, targetPort: 5432, protocol: 'TCP' }]);
  });

  it('turns the template resources into container limits, a LimitRange and a ResourceQuota for every pod', () => {
    const out = render({ plan: plan({ services: [db], resources: { cpu: 1.5, memoryBytes: 512 * 1024 ** 2 } }) });
    expect(out.workspace.spec!.template.spec!.containers[0].resources?.limits).toEqual({ cpu: '1500m', memory: String(512 * 1024 ** 2) });
    const quota = out.base.find((o) => o.kind === 'ResourceQuota') as { spec: { hard: Record<string, string> } };
    expect(quota.spec.hard).toMatchObject({ 'limits.cpu': '3000m', 'limits.memory': String(2 * 512 * 1024 ** 2), pods: '4' });
    expect(render().base.some((o) => o.kind === 'ResourceQuota')).toBe(false);
    // room for one one-off pod (a task or test with `oneOff: true`) besides the workspace and db
    const withOneOff = render({ plan: plan({ services: [db], resources: { cpu: 1.5 }, oneOffRuns: true }) }).base.find((o) => o.kind === 'ResourceQuota') as { spec: { hard: Record<string, string> } };
    expect(withOneOff.spec.hard).toMatchObject({ 'limits.cpu': '4500m', 'requests.cpu': '4500m', pods: '6' });
  });

  it('adds the download init container with the checksum for images without the agent', () => {
    const agent = downloadedAgent({ serverUrl: 'http://10.0.0.1:7080', archive: { sha256: 'ab'.repeat(32) }, downloaderImage: 'busybox:1.37', tokenEnv: 'DEN_AGENT_TOKEN', tokenSecret: 'den-agent', tokenKey: 'agent-token' });
    const pod = render({ agent }).workspace.spec!.template.spec!;
    const init = pod.initContainers![0];
    expect(init.image).toBe('busybox:1.37');
    expect(init.env).toContainEqual({ name: 'DEN_AGENT_BUNDLE_SHA256', value: 'ab'.repeat(32) });
    expect(init.env).toContainEqual({ name: 'DEN_AGENT_BUNDLE_URL', value: 'http://10.0.0.1:7080/api/v1/agent/bundle' });
    expect(pod.containers[0].volumeMounts).toContainEqual({ name: 'den-agent', mountPath: '/opt/den/agent', readOnly: true });
  });

  it('starts the workspace beside its services, its agent held back until each service with a readiness check answers through its Service', () => {
    const worker: ServicePlan = { name: 'worker', env: {}, ports: [], dependsOn: [], volumes: [] };
    expect(serviceGate(plan({ services: [db, worker] }))).toEqual(['db:5432']);
    const command = render().workspace.spec!.template.spec!.containers[0].command!;
    expect(command.slice(0, 2)).toEqual(['/opt/den/agent/node', '-e']);
    expect(command[2]).toContain('["db:5432"]');
    expect(command[2]).toContain('import("/opt/den/agent/agent.mjs")');
    // nothing to wait for: the agent itself
    expect(render({ plan: plan({ services: [worker] }) }).workspace.spec!.template.spec!.containers[0].command).toEqual(['/opt/den/agent/node', '/opt/den/agent/agent.mjs']);
    // a service that must be ready but has no port to connect to: no gate, the driver starts the workspace after it
    expect(serviceGate(plan({ services: [{ ...worker, readiness: { command: ['true'], timeoutMs: 1000, intervalMs: 100 } }] }))).toBeUndefined();
  });

  it('gives a service with an agent its own token as a read-only file and the downloaded bundle, its image and command untouched', () => {
    const api: ServicePlan = { ...db, name: 'api', image: 'postgres:16', agent: { name: 'api', url: 'http://den:7080', revision: 'r1', delivery: { kind: 'download', url: 'u', sha256: 'cd'.repeat(32) } } };
    const secrets = [...plan().secrets, { name: 'agent-token.api', env: 'DEN_AGENT_TOKEN', agent: 'api' }];
    const download = downloadedAgent({ serverUrl: 'http://10.0.0.1:7080', archive: { sha256: 'cd'.repeat(32) }, downloaderImage: 'busybox:1.37', tokenEnv: 'DEN_AGENT_TOKEN', tokenSecret: 'den-agent', tokenKey: 'agent-token.api' });
    const out = render({ plan: plan({ services: [api], secrets }), serviceAgents: { api: download } });
    const pod = (out.services[0].objects[0] as V1Deployment).spec!.template.spec!;
    expect(pod.containers[0].image).toBe('postgres:16');
    expect(pod.containers[0].command).toBeUndefined();
    expect(pod.volumes).toContainEqual({ name: 'den-agent-token', secret: { secretName: 'den-agent', items: [{ key: 'agent-token.api', path: 'token' }], defaultMode: 0o444 } });
    expect(pod.containers[0].volumeMounts).toEqual(expect.arrayContaining([
      { name: 'den-agent-token', mountPath: '/var/run/den/agent-token', readOnly: true },
      { name: 'den-agent', mountPath: '/opt/den/agent', readOnly: true },
    ]));
    expect(pod.initContainers![0].env).toContainEqual({ name: 'DEN_AGENT_TOKEN', valueFrom: { secretKeyRef: { name: 'den-agent', key: 'agent-token.api' } } });
    // the service's token never reaches the workspace
    const env = out.workspace.spec!.template.spec!.containers[0].env!;
    expect(env.filter((e) => e.name === 'DEN_AGENT_TOKEN')).toEqual([{ name: 'DEN_AGENT_TOKEN', valueFrom: { secretKeyRef: { name: 'den-agent', key: 'agent-token' } } }]);
  });
});
