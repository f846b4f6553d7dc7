import { describe, expect, it } from 'vitest';
import type { ContainerInfo } from './docker-api.ts';
import { oneOffContainerSpec } from './one-off.ts';

const workspace = { id: '0b7c4a52-9d3e-4f7a-8e61-2f4f0c1d9a33', name: 'demo', ownerId: 'u-1', ownerName: 'alice' };

/** the running api service container, as the engine's inspect reports it */
const api: ContainerInfo = {
  Id: 'c1', Name: `/den-${workspace.id}-svc-api`,
  Config: { Image: 'den/node:24', Env: ['PATH=/usr/bin', 'DB_URL=http://db:7000', 'PORT=3000'], User: 'node', WorkingDir: '/home/den/app', Labels: {} },
  State: { Status: 'running', Running: true, ExitCode: 0, OOMKilled: false },
  NetworkSettings: { Networks: {} },
};

describe('the docker one-off container', () => {
  it('takes the service\'s image, environment, user and working directory, runs the command as its entrypoint, and mounts the home read-only', () => {
    const spec = oneOffContainerSpec('den', workspace, { service: 'api', command: ['sh', '-c', 'npm test'], timeoutMs: 60_000, onOutput() {} }, api, 1_700_000_000_000);
    expect(spec).toMatchObject({
      Image: 'den/node:24', Entrypoint: ['sh', '-c', 'npm test'], Cmd: [], User: 'node', WorkingDir: '/home/den/app',
      Env: ['PATH=/usr/bin', 'DB_URL=http://db:7000', 'PORT=3000'],
      HostConfig: { NetworkMode: `den-${workspace.id}`, Privileged: false, Init: true, Mounts: [{ Type: 'volume', Source: `den-${workspace.id}-home`, Target: '/home/den', ReadOnly: true }] },
    });
    expect(spec.name).toMatch(new RegExp(`^den-${workspace.id}-run-api-[0-9a-f]{8}$`));
    // found by label: the workspace's removal takes it, the garbage collector reads its deadline
    expect(spec.Labels).toMatchObject({ 'den.managed': 'true', 'den.instance': 'den', 'den.workspace.id': workspace.id, 'den.kind': 'one-off', 'den.service': 'api', 'den.deadline': '1700000000000' });
    // no alias on the network: the service's name stays the service's
    expect(spec.NetworkingConfig).toBeUndefined();
  });
});
