/**
 * The chart's RBAC on the real test cluster: its ServiceAccount, ClusterRole, binding and
 * admission policy (rendered by `helm template`, applied into a namespace of this test), then
 * SubjectAccessReviews as den's account: it may do what server/runtimes/kubernetes does and
 * nothing else (no Secret but den-agent, no port-forward, no RBAC, no cluster-admin things), and, for
 * writes and execs, only in namespaces that are its own workspaces' (the ValidatingAdmissionPolicy: RBAC
 * cannot scope a ClusterRole to namespaces made later). Removes all it made.
 */
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { AuthorizationV1Api, CoreV1Api, Exec, KubeConfig, KubernetesObjectApi, type KubernetesObject } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kubeMissingInCI, kubeSkipReason, loadKubeConfig, testImage, waitFor } from '../cluster/kube.ts';
import { helmMissingInCI, helmSkipReason, kubectl, render, type RenderedObject } from './helm.ts';

const skipReason = kubeSkipReason ?? helmSkipReason;
if (skipReason) console.warn(`[skip] the Helm chart's RBAC on the cluster: ${skipReason}`);
if (kubeMissingInCI || helmMissingInCI) {
  describe('the Helm chart\'s RBAC on the cluster', () => {
    it('CI provides a cluster and helm', () => {
      throw new Error(`CI=true but ${skipReason} .ci/run must start the cluster and build helm before the tests.`);
    });
  });
}

const suffix = randomBytes(3).toString('hex');
/** den's own namespace (the release's) */
const RELEASE_NS = `den-h12-rbac-${suffix}`;
/** an instance name of this test alone, so its namespaces are no other den's */
const INSTANCE = `rbac${suffix}`;
const WORKSPACE_NS = `${INSTANCE}-0f3e`;
const SA = `system:serviceaccount:${RELEASE_NS}:den`;

interface Access { verb: string; resource: string; group?: string; subresource?: string; namespace?: string; name?: string }

const key = (a: Access) => `${a.verb} ${a.group ? `${a.group}/` : ''}${a.resource}${a.subresource ? `/${a.subresource}` : ''}${a.name ? ` ${a.name}` : ''}${a.namespace ? ` in ${a.namespace}` : ''}`;

describe.skipIf(!!skipReason)('the Helm chart\'s RBAC on the cluster', { timeout: 120_000 }, () => {
  const kc = loadKubeConfig();
  const core = kc.makeApiClient(CoreV1Api);
  const authz = kc.makeApiClient(AuthorizationV1Api);
  const objects = KubernetesObjectApi.makeApiClient(kc);
  let clusterScoped: RenderedObject[] = [];

  beforeAll(async () => {
    await core.createNamespace({ body: { metadata: { name: RELEASE_NS, labels: { 'den.dev/test': 'h12-rbac' } } } });
    const rendered = await render({ instance: INSTANCE }, { release: 'den', namespace: RELEASE_NS });
    const wanted = rendered.filter((object) => ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding'].includes(object.kind));
    clusterScoped = wanted.filter((object) => object.kind !== 'ServiceAccount');
    for (const object of wanted) {
      await objects.create({ ...object, metadata: { ...object.metadata, ...(object.kind === 'ServiceAccount' ? { namespace: RELEASE_NS } : {}) } } as KubernetesObject);
    }
  });

  afterAll(async () => {
    for (const object of clusterScoped.reverse()) await objects.delete(object as KubernetesObject).catch(() => undefined);
    for (const name of [WORKSPACE_NS, `${INSTANCE}-unlabeled`, `${INSTANCE}-exec`, RELEASE_NS]) await core.deleteNamespace({ name }).catch(() => undefined);
  });

  async function allowed(access: Access): Promise<boolean> {
    const review = await authz.createSubjectAccessReview({
      body: {
        spec: {
          user: SA, groups: ['system:serviceaccounts', `system:serviceaccounts:${RELEASE_NS}`, 'system:authenticated'],
          resourceAttributes: { verb: access.verb, group: access.group ?? '', resource: access.resource, subresource: access.subresource, namespace: access.namespace, name: access.name },
        },
      },
    });
    return review.status?.allowed === true;
  }

  it('allows every verb den\'s kubernetes runtime uses, in a workspace namespace and cluster-wide where it lists and watches', async () => {
    const ns = WORKSPACE_NS;
    const needs: Access[] = [
      ...['get', 'patch', 'delete'].map((verb) => ({ verb, resource: 'namespaces', name: ns })),
      { verb: 'list', resource: 'namespaces' }, { verb: 'watch', resource: 'namespaces' }, { verb: 'create', resource: 'namespaces' },
      { verb: 'list', resource: 'nodes' },
      { verb: 'list', resource: 'pods' }, { verb: 'watch', resource: 'pods' }, { verb: 'list', resource: 'pods', namespace: ns },
      // a task's or test's one-off pod (`oneOff: true`; where: the admission policy's test below)
      { verb: 'create', resource: 'pods', namespace: ns }, { verb: 'delete', resource: 'pods', namespace: ns, name: 'run-api-1234' },
      { verb: 'get', resource: 'pods', subresource: 'log', namespace: ns, name: 'svc-db-1234' },
      // an agent beside a service is started through exec (where: the admission policy's test below)
      { verb: 'create', resource: 'pods', subresource: 'exec', namespace: ns, name: 'svc-db-1234' }, { verb: 'get', resource: 'pods', subresource: 'exec', namespace: ns, name: 'svc-db-1234' },
      { verb: 'list', resource: 'events' }, { verb: 'watch', resource: 'events' },
      { verb: 'create', resource: 'secrets', namespace: ns },
      { verb: 'get', resource: 'secrets', namespace: ns, name: 'den-agent' }, { verb: 'delete', resource: 'secrets', namespace: ns, name: 'den-agent' },
      ...['list', 'create', 'patch', 'delete'].map((verb) => ({ verb, resource: 'services', namespace: ns })),
      ...['serviceaccounts', 'persistentvolumeclaims', 'resourcequotas', 'limitranges'].flatMap((resource) => ['create', 'patch'].map((verb) => ({ verb, resource, namespace: ns }))),
      ...['create', 'patch'].map((verb) => ({ verb, group: 'networking.k8s.io', resource: 'networkpolicies', namespace: ns })),
      ...['get', 'list', 'create', 'patch', 'delete'].map((verb) => ({ verb, group: 'apps', resource: 'deployments', namespace: ns })),
    ];
    const results = await Promise.all(needs.map(async (access) => [key(access), await allowed(access)] as const));
    expect(results.filter(([, ok]) => !ok).map(([what]) => what)).toEqual([]);
  });

  it('refuses what den does not need: other Secrets, port-forward, RBAC, tokens, nodes, cluster-admin things', async () => {
    const refused: Access[] = [
      { verb: 'list', resource: 'secrets' },
      { verb: 'list', resource: 'secrets', namespace: 'kube-system' },
      { verb: 'get', resource: 'secrets', namespace: 'kube-system', name: 'bootstrap-token-abcdef' },
      { verb: 'get', resource: 'secrets', namespace: WORKSPACE_NS, name: 'someone-elses' },
      { verb: 'watch', resource: 'secrets', namespace: WORKSPACE_NS },
      { verb: 'update', resource: 'secrets', namespace: WORKSPACE_NS, name: 'den-agent' },
      { verb: 'get', resource: 'pods', namespace: WORKSPACE_NS, name: 'den-workspace-1' },
      { verb: 'update', resource: 'pods', namespace: WORKSPACE_NS, name: 'den-workspace-1' },
      { verb: 'create', resource: 'pods', subresource: 'portforward', namespace: WORKSPACE_NS, name: 'den-workspace-1' },
      { verb: 'create', resource: 'serviceaccounts', subresource: 'token', namespace: 'kube-system', name: 'default' },
      { verb: 'get', resource: 'configmaps', namespace: 'kube-system' },
      { verb: 'update', resource: 'namespaces', name: 'kube-system' },
      { verb: 'delete', resource: 'nodes', name: 'den-node' },
      { verb: 'patch', resource: 'nodes', name: 'den-node' },
      { verb: 'create', group: 'rbac.authorization.k8s.io', resource: 'clusterrolebindings' },
      { verb: 'create', group: 'rbac.authorization.k8s.io', resource: 'rolebindings', namespace: WORKSPACE_NS },
      { verb: 'bind', group: 'rbac.authorization.k8s.io', resource: 'clusterroles', name: 'cluster-admin' },
      { verb: 'escalate', group: 'rbac.authorization.k8s.io', resource: 'clusterroles' },
      { verb: 'impersonate', resource: 'users', name: 'admin' },
      { verb: 'delete', group: 'admissionregistration.k8s.io', resource: 'validatingadmissionpolicies' },
      { verb: 'create', group: 'apps', resource: 'daemonsets', namespace: WORKSPACE_NS },
      { verb: 'update', group: 'apps', resource: 'deployments', subresource: 'scale', namespace: WORKSPACE_NS, name: 'den-workspace' },
      { verb: 'create', group: 'certificates.k8s.io', resource: 'certificatesigningrequests' },
      { verb: '*', group: '*', resource: '*' },
    ];
    const results = await Promise.all(refused.map(async (access) => [key(access), await allowed(access)] as const));
    expect(results.filter(([, ok]) => ok).map(([what]) => what)).toEqual([]);
  });

  it('refuses den\'s writes outside its own workspace namespaces (the admission policy), and allows them inside', async () => {
    const asDen = (args: string[], input?: string) => kubectl([...args, `--as=${SA}`, '--as-group=system:serviceaccounts', `--as-group=system:serviceaccounts:${RELEASE_NS}`], { input });
    const apply = (object: object) => asDen(['apply', '--server-side', '--field-manager=den', '-f', '-'], JSON.stringify(object));
    const service = (namespace: string) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'db', namespace }, spec: { ports: [{ port: 5432 }], selector: { app: 'db' } } });
    const labels = { 'den.dev/managed': 'true', 'den.dev/instance': INSTANCE };

    // A namespace of this den's workspaces, made the way den makes them (server-side apply).
    // The policy takes a moment to be in force after it is created: the first refusal is waited for.
    await waitFor('the admission policy to refuse a Service in den\'s own namespace', async () => {
      const result = await apply(service(RELEASE_NS));
      return result.code !== 0 && /den's service account may change objects only in the namespaces of its own workspaces/.test(result.stderr);
    }, 30_000, 500);
    const made = await apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: WORKSPACE_NS, labels } });
    expect(made.code, made.stderr).toBe(0);
    const inside = await apply(service(WORKSPACE_NS));
    expect(inside.code, inside.stderr).toBe(0);

    // not named <instance>-..., or not labeled as this den's: refused
    const outside: [string, object, ('apply' | 'create')?][] = [
      ['a namespace without den\'s prefix', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: `other-${suffix}`, labels } }],
      ['a namespace with the prefix but not den\'s labels', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: `${INSTANCE}-unlabeled` } }],
      ['kube-system relabeled as den\'s', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'kube-system', labels } }],
      ['a Service in kube-system', service('kube-system')],
      // den creates its token Secrets (create, not apply)
      ['a Secret in den\'s own namespace', { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'den-agent', namespace: RELEASE_NS }, stringData: { x: 'y' } }, 'create'],
      ['a Pod in the default namespace', { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x', namespace: 'default' }, spec: { containers: [{ name: 'x', image: 'x' }] } }, 'create'],
      ['a Deployment in the default namespace', { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x', namespace: 'default' }, spec: { selector: { matchLabels: { a: 'b' } }, template: { metadata: { labels: { a: 'b' } }, spec: { containers: [{ name: 'x', image: 'x' }] } } } }],
    ];
    for (const [what, object, verb = 'apply'] of outside) {
      // a server-side dry run goes through admission and changes nothing, should the policy fail
      const result = await asDen([...(verb === 'apply' ? ['apply', '--server-side', '--field-manager=den'] : ['create']), '--dry-run=server', '-f', '-'], JSON.stringify(object));
      expect(result.code, `${what}: ${result.stdout}`).not.toBe(0);
      expect(result.stderr, what).toMatch(/den's service account may change objects only in the namespaces of its own workspaces/);
    }
    // a namespace someone else made with den's prefix is not den's to delete
    await core.createNamespace({ body: { metadata: { name: `${INSTANCE}-unlabeled` } } });
    const deleted = await asDen(['delete', 'namespace', `${INSTANCE}-unlabeled`, '--wait=false']);
    expect(deleted.code).not.toBe(0);
    expect(deleted.stderr).toMatch(/den's service account may change objects only/);
    // its own workspace namespace it may delete
    const own = await asDen(['delete', 'namespace', WORKSPACE_NS, '--wait=false']);
    expect(own.code, own.stderr).toBe(0);
  });

  it('lets den exec only into pods of its own workspace namespaces (the admission policy on pods/exec)', async () => {
    // as den does it (server/runtimes/kubernetes/service-agent.ts): the exec API with den's own token
    const { status } = await core.createNamespacedServiceAccountToken({ namespace: RELEASE_NS, name: 'den', body: { spec: { expirationSeconds: 600 } } });
    const cluster = kc.getCurrentCluster()!;
    const asDen = new KubeConfig();
    asDen.loadFromOptions({ clusters: [cluster], users: [{ name: 'den', token: status!.token }], contexts: [{ name: 'den', cluster: cluster.name, user: 'den' }], currentContext: 'den' });
    const execAsDen = async (namespace: string): Promise<string> => {
      let outcome = 'the exec ended without a status';
      const socket = await new Exec(asDen).exec(namespace, 'sleeper', 'service', ['true'], new PassThrough(), null, null, false, (result) => {
        outcome = result.status === 'Success' ? 'Success' : result.message ?? result.reason ?? 'Failure';
      }).catch((error: Error) => { outcome = error.message; return undefined; });
      if (socket && socket.readyState !== socket.CLOSED) await new Promise((resolve) => socket.once('close', resolve));
      await new Promise((resolve) => setImmediate(resolve));
      return outcome;
    };
    const own = `${INSTANCE}-exec`;
    await core.createNamespace({ body: { metadata: { name: own, labels: { 'den.dev/managed': 'true', 'den.dev/instance': INSTANCE } } } });
    const pod = (namespace: string) => core.createNamespacedPod({
      namespace,
      body: {
        metadata: { name: 'sleeper' },
        spec: { automountServiceAccountToken: false, terminationGracePeriodSeconds: 0, containers: [{ name: 'service', image: testImage, imagePullPolicy: 'IfNotPresent', command: ['sleep', '3600'] }] },
      },
    });
    await Promise.all([pod(own), pod(RELEASE_NS)]);
    for (const namespace of [own, RELEASE_NS]) {
      await waitFor(`the pod in ${namespace} to run`, async () => (await core.readNamespacedPod({ namespace, name: 'sleeper' })).status?.phase === 'Running', 90_000, 500);
    }
    expect(await execAsDen(own)).toBe('Success');
    // den's own namespace is not a workspace's: RBAC allows the exec there (a ClusterRole), the
    // policy refuses it (the websocket upgrade is answered 403, without the policy's sentence)
    expect(await allowed({ verb: 'create', resource: 'pods', subresource: 'exec', namespace: RELEASE_NS, name: 'sleeper' })).toBe(true);
    expect(await execAsDen(RELEASE_NS)).toBe('Unexpected server response: 403');
    await core.deleteNamespace({ name: own });
  });
});
