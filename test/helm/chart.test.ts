/**
 * deploy/helm/den without a cluster: `helm lint`, and `helm template` with the defaults and with
 * the two-replica PostgreSQL switch, the rendered objects parsed and checked (probes on den's
 * health endpoints, non-root, the RBAC rules, the environment den reads), and values that cannot
 * work refused with a sentence.
 */
import type { V1ClusterRole, V1Deployment, V1EnvVar, V1PolicyRule } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../server/config.ts';
import { CHART, find, helm, helmMissingInCI, helmSkipReason, render, setArgs, type RenderedObject } from './helm.ts';

if (helmSkipReason) console.warn(`[skip] the Helm chart: ${helmSkipReason}`);
if (helmMissingInCI) {
  describe('the Helm chart', () => {
    it('CI builds helm', () => {
      throw new Error(`CI=true but ${helmSkipReason} .ci/run must build it before the tests.`);
    });
  });
}

const POSTGRES = { replicas: 2, 'storage.database': 'postgres', 'storage.postgres.url': 'postgres://den:secret@postgres.db.svc:5432/den' };

/**
 * Every rule of den's ClusterRole as "group/resource verb[ names]", what server/runtimes/kubernetes
 * calls (see templates/rbac.yaml for why each one; server-side apply is create + patch): a new call
 * there must be added here and there.
 */
const DEN_NEEDS = [
  '/namespaces get', '/namespaces list', '/namespaces watch', '/namespaces create', '/namespaces patch', '/namespaces delete',
  '/nodes list',
  '/pods list', '/pods watch', '/pods create', '/pods delete', '/pods/log get', '/pods/exec create', '/pods/exec get',
  '/events list', '/events watch',
  '/secrets create', '/secrets get den-agent', '/secrets delete den-agent',
  '/services list', '/services create', '/services patch', '/services delete',
  ...['serviceaccounts', 'persistentvolumeclaims', 'resourcequotas', 'limitranges'].flatMap((resource) => [`/${resource} create`, `/${resource} patch`]),
  'networking.k8s.io/networkpolicies create', 'networking.k8s.io/networkpolicies patch',
  'apps/deployments get', 'apps/deployments list', 'apps/deployments create', 'apps/deployments patch', 'apps/deployments delete',
].sort();

function ruleStrings(rules: V1PolicyRule[]): string[] {
  return rules.flatMap((rule) => (rule.apiGroups ?? []).flatMap((group) => (rule.resources ?? []).flatMap((resource) => rule.verbs.map((verb) =>
    `${group}/${resource} ${verb}${rule.resourceNames ? ` ${rule.resourceNames.join(',')}` : ''}`)))).sort();
}

function deploymentOf(objects: RenderedObject[]): V1Deployment {
  const [deployment] = find(objects, 'Deployment');
  return deployment as unknown as V1Deployment;
}

function envOf(deployment: V1Deployment): Map<string, V1EnvVar> {
  return new Map((deployment.spec!.template.spec!.containers[0].env ?? []).map((variable) => [variable.name, variable]));
}

/** The environment as the kubelet would give it: $(POD_IP) expanded, a Secret reference as its value. */
function resolvedEnv(env: Map<string, V1EnvVar>, podIp: string, secrets: Record<string, string>): Record<string, string> {
  const values: Record<string, string> = { POD_IP: podIp };
  for (const [name, variable] of env) {
    if (variable.value !== undefined) values[name] = variable.value.replace(/\$\((\w+)\)/g, (_, ref: string) => values[ref] ?? '');
    else if (variable.valueFrom?.secretKeyRef) values[name] = secrets[`${variable.valueFrom.secretKeyRef.name}/${variable.valueFrom.secretKeyRef.key}`] ?? '';
  }
  return values;
}

describe.skipIf(!!helmSkipReason)('the Helm chart', () => {
  it('passes helm lint with the defaults and with two replicas on PostgreSQL', async () => {
    for (const set of [{}, POSTGRES]) {
      const result = await helm(['lint', '--strict', CHART, ...setArgs(set)]);
      expect(result.code, `${result.stdout}\n${result.stderr}`).toBe(0);
      expect(result.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    }
  });

  it('renders one den on SQLite by default: a non-root pod with probes on /healthz and /readyz, its claim, Service and account', async () => {
    const objects = await render();
    expect(objects.map((object) => object.kind).sort()).toEqual(
      ['ClusterRole', 'ClusterRoleBinding', 'Deployment', 'PersistentVolumeClaim', 'Service', 'ServiceAccount', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding'].sort());
    const deployment = deploymentOf(objects);
    expect(deployment.spec!.replicas).toBe(1);
    expect(deployment.spec!.strategy!.type).toBe('Recreate');
    const pod = deployment.spec!.template.spec!;
    const container = pod.containers[0];
    expect(container.image).toBe('den/server:latest');
    expect(container.livenessProbe!.httpGet).toMatchObject({ path: '/healthz', port: 'http' });
    expect(container.readinessProbe!.httpGet).toMatchObject({ path: '/readyz', port: 'http' });
    expect(container.startupProbe!.httpGet).toMatchObject({ path: '/readyz', port: 'http' });
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 999, fsGroup: 999 });
    expect(container.securityContext).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    expect(container.resources!.requests).toMatchObject({ cpu: '100m', memory: '256Mi' });
    expect(container.resources!.limits).toMatchObject({ memory: '1Gi' });
    expect(pod.serviceAccountName).toBe('den');
    const [claim] = find(objects, 'PersistentVolumeClaim');
    expect(pod.volumes!.find((volume) => volume.name === 'data')!.persistentVolumeClaim!.claimName).toBe(claim.metadata.name);
    const [service] = find(objects, 'Service');
    expect((service.spec as { ports: { name: string; port: number }[] }).ports.map((port) => `${port.name}:${port.port}`)).toEqual(['http:7080', 'ssh:2222']);

    // the environment is a configuration den accepts, with agents dialing the Service's DNS name
    const env = envOf(deployment);
    expect(env.has('DEN_DATABASE_URL')).toBe(false);
    const config = loadConfig({}, resolvedEnv(env, '10.244.0.7', {}), undefined);
    expect(config.databaseUrl).toBeUndefined();
    expect(config).toMatchObject({
      runtime: 'kubernetes', listen: '0.0.0.0:7080', dataDir: '/var/lib/den', instance: 'den',
      agentAccessUrl: 'http://den.den-system.svc.cluster.local:7080', accessUrl: 'http://den.den-system.svc.cluster.local:7080',
      replicaUrl: 'http://10.244.0.7:7080',
    });
  });

  it('holds only the verbs den\'s kubernetes runtime uses, Secrets read by name only, bound to den\'s account', async () => {
    const objects = await render();
    const [role] = find(objects, 'ClusterRole') as unknown as V1ClusterRole[];
    expect(ruleStrings(role.rules!)).toEqual(DEN_NEEDS);
    for (const rule of role.rules!) {
      expect([...rule.verbs, ...(rule.resources ?? []), ...(rule.apiGroups ?? [])]).not.toContain('*');
    }
    const [binding] = find(objects, 'ClusterRoleBinding');
    expect(binding).toMatchObject({ roleRef: { kind: 'ClusterRole', name: role.metadata!.name }, subjects: [{ kind: 'ServiceAccount', name: 'den', namespace: 'den-system' }] });
    const [policy] = find(objects, 'ValidatingAdmissionPolicy');
    expect(JSON.stringify(policy)).toContain('system:serviceaccount:den-system:den');
    const [policyBinding] = find(objects, 'ValidatingAdmissionPolicyBinding');
    expect(policyBinding).toMatchObject({ spec: { policyName: policy.metadata.name, validationActions: ['Deny'] } });

    const withoutPolicy = await render({ 'rbac.restrictToWorkspaceNamespaces': false });
    expect(find(withoutPolicy, 'ValidatingAdmissionPolicy')).toEqual([]);
    expect(find(await render({ 'rbac.create': false }), 'ClusterRole')).toEqual([]);
  });

  it('runs two replicas on PostgreSQL with one switch: the URL from a Secret, each replica reached at its pod IP', async () => {
    const objects = await render(POSTGRES);
    expect(find(objects, 'PersistentVolumeClaim')).toEqual([]);
    const deployment = deploymentOf(objects);
    expect(deployment.spec!.replicas).toBe(2);
    expect(deployment.spec!.strategy!.type).toBe('RollingUpdate');
    const env = envOf(deployment);
    expect(env.get('POD_IP')!.valueFrom!.fieldRef!.fieldPath).toBe('status.podIP');
    expect(env.get('DEN_REPLICA_URL')!.value).toBe('http://$(POD_IP):7080');
    const reference = env.get('DEN_DATABASE_URL')!.valueFrom!.secretKeyRef!;
    const [secret] = find(objects, 'Secret') as unknown as { metadata: { name: string }; stringData: Record<string, string> }[];
    expect(secret.metadata.name).toBe(reference.name);
    expect(secret.stringData[reference.key]).toBe(POSTGRES['storage.postgres.url']);
    // the password is in the Secret only, not in the Deployment
    expect(JSON.stringify(deployment)).not.toContain('secret@');
    expect(deployment.spec!.template.spec!.volumes!.find((volume) => volume.name === 'data')!.emptyDir).toEqual({});

    const config = loadConfig({}, resolvedEnv(env, '10.244.0.9', { [`${reference.name}/${reference.key}`]: POSTGRES['storage.postgres.url'] }), undefined);
    expect(config).toMatchObject({ databaseUrl: POSTGRES['storage.postgres.url'], replicaUrl: 'http://10.244.0.9:7080' });

    // an existing Secret instead of a URL
    const existing = await render({ replicas: 2, 'storage.database': 'postgres', 'storage.postgres.existingSecret': 'db-credentials', 'storage.postgres.existingSecretKey': 'dsn' });
    expect(find(existing, 'Secret')).toEqual([]);
    expect(envOf(deploymentOf(existing)).get('DEN_DATABASE_URL')!.valueFrom!.secretKeyRef).toEqual({ name: 'db-credentials', key: 'dsn' });
  });

  it('uses the access and agent URLs and the instance it is given', async () => {
    const env = envOf(deploymentOf(await render({ accessUrl: 'https://den.example.com', agentUrl: 'http://den.internal:7080', instance: 'den-staging' }, { release: 'team', namespace: 'tools' })));
    expect(env.get('DEN_ACCESS_URL')!.value).toBe('https://den.example.com');
    expect(env.get('DEN_AGENT_ACCESS_URL')!.value).toBe('http://den.internal:7080');
    expect(env.get('DEN_INSTANCE')!.value).toBe('den-staging');
    const defaults = envOf(deploymentOf(await render({}, { release: 'team', namespace: 'tools' })));
    expect(defaults.get('DEN_AGENT_ACCESS_URL')!.value).toBe('http://team-den.tools.svc.cluster.local:7080');
  });

  it('refuses values that cannot work with a sentence saying what to set', async () => {
    const cases: [Record<string, string | number | boolean>, RegExp][] = [
      [{ replicas: 2 }, /replicas > 1 needs storage\.database=postgres/],
      [{ 'storage.database': 'postgres' }, /needs storage\.postgres\.url .* or storage\.postgres\.existingSecret/],
      [{ 'storage.database': 'postgres', 'storage.postgres.url': 'mysql://x' }, /must be a postgres:\/\/ URL/],
      [{ 'storage.database': 'etcd' }, /use sqlite or postgres/],
      [{ instance: 'Den_1' }, /lowercase letters, digits and -/],
    ];
    for (const [set, sentence] of cases) {
      const result = await helm(['template', 'den', CHART, ...setArgs(set)]);
      expect(result.code, JSON.stringify(set)).not.toBe(0);
      expect(result.stderr).toMatch(sentence);
    }
  });
});
