import { describe, expect, it } from 'vitest';
import type { ServicePlan, WorkspacePlan } from '../driver.ts';
import { labelFilter, names, serviceContainerSpec, startOrder, workspaceContainerSpec } from './objects.ts';

const workspace = { id: '0b7c4a52-9d3e-4f7a-8e61-2f4f0c1d9a33', name: 'My_App.dev', ownerId: 'u-1', ownerName: 'alice' };

function service(name: string, dependsOn: string[] = []): ServicePlan {
  return { name, env: {}, ports: [{ port: 5432, preview: false }], volumes: [{ name: 'data', path: '/data' }], dependsOn };
}

function plan(services: ServicePlan[] = []): WorkspacePlan {
  return {
    workspace, image: 'den/node:24', resources: { cpu: 1.5, memoryBytes: 2 * 1024 ** 3, pids: 512 }, home: {},
    env: { DEN_OWNER: 'alice' }, agent: { name: 'main', url: 'http://127.0.0.1:7080', revision: 'r1', delivery: { kind: 'volume' } }, secrets: [{ name: 'agent-token', env: 'DEN_AGENT_TOKEN', agent: 'main' }], services,
  };
}

describe('docker object rendering', () => {
  it('runs the workspace as uid 1000, unprivileged, with the template limits and swap equal to memory', () => {
    const spec = workspaceContainerSpec({ instance: 'den', plan: plan(), agentUrl: 'http://host.docker.internal:7080', extraHosts: ['host.docker.internal:host-gateway'] });
    expect(spec).toMatchObject({
      name: `den-${workspace.id}-workspace`, Image: 'den/node:24', User: '1000:1000', Hostname: 'my-app-dev',
      Entrypoint: ['/opt/den/agent/node', '/opt/den/agent/agent.mjs'],
      HostConfig: { Privileged: false, NanoCpus: 1_500_000_000, Memory: 2 * 1024 ** 3, MemorySwap: 2 * 1024 ** 3, PidsLimit: 512, NetworkMode: `den-${workspace.id}` },
    });
    expect(spec.Env).toEqual(expect.arrayContaining(['DEN_AGENT_URL=http://host.docker.internal:7080', 'HOME=/home/den', 'DEN_OWNER=alice']));
    expect(spec.HostConfig.Mounts).toEqual([{ Type: 'volume', Source: `den-${workspace.id}-home`, Target: '/home/den' }]);
  });

  it('bounds what the engine keeps of the workspace\'s and its services\' output', () => {
    const bounded = { Type: 'json-file', Config: { 'max-size': '16m', 'max-file': '2' } };
    const workspaceSpec = workspaceContainerSpec({ instance: 'den', plan: plan(), agentUrl: 'http://host.docker.internal:7080', extraHosts: [] });
    expect(workspaceSpec.HostConfig.LogConfig).toEqual(bounded);
    expect(serviceContainerSpec('den', plan(), service('db')).HostConfig.LogConfig).toEqual(bounded);
  });

  it('mounts the agent bundle read-only when the image does not carry it', () => {
    const spec = workspaceContainerSpec({ instance: 'den', plan: plan(), agentUrl: 'x', agentVolume: 'den-agent-abc', extraHosts: [] });
    expect(spec.HostConfig.Mounts).toContainEqual({ Type: 'volume', Source: 'den-agent-abc', Target: '/opt/den/agent', ReadOnly: true });
  });

  it('runs a service that restarts after a sync under the agent bundle\'s supervisor, with its own command', () => {
    const api: ServicePlan = { ...service('api'), command: ['node', 'server.js'], restartable: true, agent: { name: 'api', url: 'x', revision: 'r1', delivery: { kind: 'volume' } } };
    const spec = serviceContainerSpec('den', plan(), api, { volume: 'den-agent-abc', extraHosts: [] });
    expect(spec).toMatchObject({ Entrypoint: ['/opt/den/agent/node', '/opt/den/agent/agent.mjs', 'supervise', '--'], Cmd: ['node', 'server.js'] });
    expect(serviceContainerSpec('den', plan(), { ...api, restartable: undefined }, { volume: 'den-agent-abc', extraHosts: [] }).Entrypoint).toBeUndefined();
  });

  it('labels every object with den.managed, the workspace id and the owner', () => {
    const spec = serviceContainerSpec('den', plan(), service('db'));
    expect(spec.Labels).toMatchObject({ 'den.managed': 'true', 'den.instance': 'den', 'den.workspace.id': workspace.id, 'den.owner': 'alice', 'den.owner.id': 'u-1', 'den.kind': 'service', 'den.service': 'db' });
    expect(JSON.parse(labelFilter('den', workspace.id))).toEqual({ label: ['den.managed=true', 'den.instance=den', `den.workspace.id=${workspace.id}`] });
  });

  it('makes a service reachable by its name on the workspace network, with PORT and its volumes', () => {
    const spec = serviceContainerSpec('den', plan(), service('db'));
    expect(spec.NetworkingConfig).toEqual({ EndpointsConfig: { [`den-${workspace.id}`]: { Aliases: ['db'] } } });
    expect(spec.Env).toEqual(expect.arrayContaining(['PORT=5432', 'HOST=0.0.0.0']));
    expect(spec.HostConfig.Mounts).toEqual([{ Type: 'volume', Source: `den-${workspace.id}-db-data`, Target: '/data' }]);
    expect(spec.Image).toBe('den/node:24');
  });

  it('changes the spec hash when the plan changes and keeps it when it does not', () => {
    const a = workspaceContainerSpec({ instance: 'den', plan: plan(), agentUrl: 'x', extraHosts: [] });
    const b = workspaceContainerSpec({ instance: 'den', plan: plan(), agentUrl: 'x', extraHosts: [] });
    const c = workspaceContainerSpec({ instance: 'den', plan: { ...plan(), agent: { name: 'main', url: 'x', revision: 'r2', delivery: { kind: 'volume' } } }, agentUrl: 'x', extraHosts: [] });
    expect(a.Labels['den.spec']).toBe(b.Labels['den.spec']);
    expect(a.Labels['den.spec']).not.toBe(c.Labels['den.spec']);
  });

  it('keeps secrets out of the rendered spec, so a new agent token does not replace a running workspace', () => {
    const spec = workspaceContainerSpec({ instance: 'den', plan: plan(), agentUrl: 'x', extraHosts: [] });
    expect(spec.Env!.some((entry) => entry.startsWith('DEN_AGENT_TOKEN='))).toBe(false);
  });

  it('names bridges within the 15 characters Linux allows, under the dn- prefix the isolation rules match', () => {
    expect(names.bridge(workspace.id)).toBe('dn-0b7c4a529d3e');
    expect(names.bridge(workspace.id).length).toBeLessThanOrEqual(15);
  });

  it('orders services after what they depend on and names a cycle', () => {
    const order = startOrder([service('api', ['db', 'cache']), service('cache', ['db']), service('db')]);
    expect(order.map((s) => s.name)).toEqual(['db', 'cache', 'api']);
    expect(() => startOrder([service('a', ['b']), service('b', ['a'])])).toThrow('Services depend on each other in a cycle: a -> b -> a.');
  });
});
