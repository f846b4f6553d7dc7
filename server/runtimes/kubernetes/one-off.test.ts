import { describe, expect, it } from 'vitest';
import { oneOffPod } from './one-off.ts';
import { podEvents } from './watch.ts';

const workspace = { id: '0b7c4a52-9d3e-4f7a-8e61-2f4f0c1d9a33', name: 'demo', ownerId: 'u-1', ownerName: 'alice' };
const request = { service: 'api', command: ['sh', '-c', 'npm test'], timeoutMs: 90_500, onOutput() {} };
const template = {
  container: {
    name: 'service', image: 'den/node:24', workingDir: '/home/den/app', env: [{ name: 'DB_URL', value: 'http://db:7000' }],
    securityContext: { allowPrivilegeEscalation: false, runAsUser: 1000 }, args: ['node', 'server.js'], ports: [{ containerPort: 3000 }],
  },
  podSecurity: { runAsNonRoot: true },
};

describe('the kubernetes one-off pod', () => {
  it('runs the command once from the service\'s image and environment, with the home claim read-only on the workspace\'s node and a deadline', () => {
    const pod = oneOffPod('den', workspace, request, template, 'den-node', Date.parse('2026-12-07T05:00:00Z'));
    expect(pod.metadata).toMatchObject({
      labels: { 'den.dev/managed': 'true', 'den.dev/instance': 'den', 'den.dev/workspace': workspace.id, 'den.dev/kind': 'one-off', 'den.dev/service': 'api' },
      annotations: { 'den.dev/deadline': '2026-12-07T05:00:00.000Z' },
    });
    expect(pod.metadata!.name).toMatch(/^run-api-[0-9a-f]{8}$/);
    expect(pod.spec).toMatchObject({
      restartPolicy: 'Never', activeDeadlineSeconds: 91, automountServiceAccountToken: false, serviceAccountName: 'den-workspace', enableServiceLinks: false,
      securityContext: { runAsNonRoot: true },
      volumes: [{ name: 'home', persistentVolumeClaim: { claimName: 'den-home', readOnly: true } }],
      affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: ['den-node'] }] }] } } },
    });
    const [container] = pod.spec!.containers;
    // the command replaces the entrypoint; the service's own args and ports are not carried over
    expect(container).toEqual({
      name: 'service', image: 'den/node:24', imagePullPolicy: 'IfNotPresent', command: ['sh', '-c', 'npm test'], workingDir: '/home/den/app',
      env: [{ name: 'DB_URL', value: 'http://db:7000' }], volumeMounts: [{ name: 'home', mountPath: '/home/den', readOnly: true }],
      securityContext: { allowPrivilegeEscalation: false, runAsUser: 1000 },
    });
    expect(oneOffPod('den', workspace, request, template, undefined, 0).spec!.affinity).toBeUndefined();
  });

  it('is not reported as a workspace that died when its command exits', () => {
    const pod = oneOffPod('den', workspace, request, template, 'den-node', 0);
    pod.status = { phase: 'Failed', containerStatuses: [{ name: 'service', image: 'den/node:24', imageID: '', ready: false, restartCount: 0, state: { terminated: { exitCode: 3 } } }] };
    expect(podEvents(pod, false)).toEqual([]);
    // a service pod in the same state is
    pod.metadata!.labels!['den.dev/kind'] = 'service';
    expect(podEvents(pod, false)).toMatchObject([{ kind: 'exited', subject: { type: 'service', name: 'api' } }]);
  });
});
