import { createHash } from 'node:crypto';
import type {
  KubernetesObject, V1Container, V1Deployment, V1EnvVar, V1LimitRange, V1Namespace, V1NetworkPolicy, V1NetworkPolicyPeer,
  V1PersistentVolumeClaim, V1Probe, V1ResourceQuota, V1Service, V1ServiceAccount, V1Volume, V1VolumeMount,
} from '@kubernetes/client-node';
import { AGENT_COMMAND } from '../agent-bundle.ts';
import { MAIN_AGENT } from '../../../protocol/agent.ts';
import { agentTokenSecret, secretsOf, type ReadinessPlan, type ServicePlan, type WorkspaceIdentity, type WorkspacePlan } from '../driver.ts';
import type { AgentDelivery } from './agent-delivery.ts';

/**
 * Pure rendering: plan -> the Kubernetes objects of one workspace, all in its own namespace.
 * Everything carries den.dev/managed, den.dev/instance and den.dev/workspace, so status, delete
 * and the garbage collector find objects by label, never by parsing names. The objects are
 * applied with server-side apply: rendering the same plan twice gives the same objects, so a
 * re-apply changes nothing and a new template version changes only the fields that differ.
 */
export const LABEL_MANAGED = 'den.dev/managed';
export const LABEL_INSTANCE = 'den.dev/instance';
export const LABEL_WORKSPACE = 'den.dev/workspace';
export const LABEL_WORKSPACE_NAME = 'den.dev/workspace-name';
export const LABEL_OWNER = 'den.dev/owner';
export const LABEL_OWNER_ID = 'den.dev/owner-id';
export const LABEL_TEMPLATE = 'den.dev/template';
export const LABEL_KIND = 'den.dev/kind';
export const LABEL_SERVICE = 'den.dev/service';
/** a fresh value each time den creates the agent Secret; in the pod template, so a new token means a new pod */
export const ANNOTATION_SECRET_GENERATION = 'den.dev/secret-generation';
export const ANNOTATION_AGENT_REVISION = 'den.dev/agent-revision';
/** a digest of the pod template, on its pods: a start waits for pods of the template it applied, not the old ones */
export const ANNOTATION_POD_SPEC = 'den.dev/pod-spec';

export const HOME_PATH = '/home/den';
export const WORKSPACE_UID = 1000;
export const WORKSPACE_CONTAINER = 'workspace';
export const SERVICE_CONTAINER = 'service';
export const AGENT_SECRET = 'den-agent';
export const SERVICE_ACCOUNT = 'den-workspace';
export const WORKSPACE_DEPLOYMENT = 'den-workspace';
export const HOME_CLAIM = 'den-home';
/** where a service container finds its agent's token (a read-only Secret volume holding one key) */
export const SERVICE_AGENT_TOKEN_DIR = '/var/run/den/agent-token';
export const SERVICE_AGENT_TOKEN_FILE = 'token';
const DEFAULT_HOME_BYTES = 10 * 1024 ** 3;
const DEFAULT_VOLUME_BYTES = 1024 ** 3;

export type ObjectKind = 'workspace' | 'service' | 'home' | 'volume' | 'secret' | 'policy' | 'quota' | 'account' | 'one-off';

export interface RenderInput {
  instance: string;
  plan: WorkspacePlan;
  /** the URL the agent dials, as seen from a pod */
  agentUrl: string;
  agent: AgentDelivery;
  /** the agent Secret's generation (pod template annotation); undefined: no Secret yet */
  secretGeneration: string;
  /** 0 when stopped */
  replicas: number;
  /** who may open connections into the workspace's pods besides its own pods */
  ingressFrom: V1NetworkPolicyPeer[];
  /** seconds a container gets between SIGTERM and SIGKILL (default 10) */
  stopGraceSeconds?: number;
  /** how each service's agent gets into its pod, by service name (services with `agent`; nothing when its image carries the agent) */
  serviceAgents?: Record<string, AgentDelivery>;
}

export const names = {
  /** Namespace names stop at 63 characters: 26 of the instance, a dash, the 36 of a uuid. */
  namespace: (instance: string, workspaceId: string) => `${names.namespacePrefix(instance)}${dnsLabel(workspaceId, 36)}`,
  /** what every namespace of the instance starts with */
  namespacePrefix: (instance: string) => `${instance.slice(0, 26).replace(/-+$/, '')}-`,
  serviceDeployment: (service: string) => `svc-${dnsLabel(service, 59)}`,
  /** the Service: the name the workspace reaches it by (resolveEndpoints) */
  service: (service: string) => dnsLabel(service, 63, true),
  volume: (service: string, volume: string) => `svc-${dnsLabel(service, 29)}-${dnsLabel(volume, 29)}`,
};

/** The key of a plan secret in the agent Secret: its name ('agent-token', 'agent-token.<service>'), in the characters a key may have. */
export function secretKey(name: string): string {
  return name.replace(/[^-._a-zA-Z0-9]/g, '_');
}

/** A DNS-1123 label (DNS-1035 with `letterFirst`: Service names) from any name. */
export function dnsLabel(name: string, max = 63, letterFirst = false): string {
  let label = name.toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+/, '');
  if (letterFirst && !/^[a-z]/.test(label)) label = `s-${label}`;
  return label.slice(0, max).replace(/-+$/, '') || 'x';
}

/** A label value: 63 characters of [A-Za-z0-9._-], alphanumeric at both ends. */
export function labelValue(value: string): string {
  return value.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 63).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '');
}

export function labelsFor(instance: string, workspace: WorkspaceIdentity, kind: ObjectKind, extra: Record<string, string> = {}): Record<string, string> {
  return {
    [LABEL_MANAGED]: 'true',
    [LABEL_INSTANCE]: instance,
    [LABEL_WORKSPACE]: workspace.id,
    [LABEL_KIND]: kind,
    ...extra,
  };
}

/** label selector for everything this den instance made (or for one workspace) */
export function selector(instance: string, workspaceId?: string): string {
  return [`${LABEL_MANAGED}=true`, `${LABEL_INSTANCE}=${instance}`, ...(workspaceId ? [`${LABEL_WORKSPACE}=${workspaceId}`] : [])].join(',');
}

export function namespaceObject(instance: string, workspace: WorkspaceIdentity): V1Namespace & KubernetesObject {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: {
      name: names.namespace(instance, workspace.id),
      labels: {
        ...labelsFor(instance, workspace, 'workspace'),
        [LABEL_WORKSPACE_NAME]: labelValue(workspace.name),
        [LABEL_OWNER]: labelValue(workspace.ownerName),
        [LABEL_OWNER_ID]: labelValue(workspace.ownerId),
        ...(workspace.template ? { [LABEL_TEMPLATE]: labelValue(workspace.template) } : {}),
      },
    },
  };
}

/**
 * Everything of a workspace but the Namespace and the Secret (created, not applied: its value
 * is asked for only when it is made), in the order they are applied: account, policy, quota and
 * limits, claims, then each service (Deployment + Service) in dependsOn order, then the workspace.
 */
export function renderWorkspace(input: RenderInput): { base: KubernetesObject[]; services: { plan: ServicePlan; objects: KubernetesObject[] }[]; workspace: V1Deployment & KubernetesObject } {
  const { plan, instance } = input;
  const namespace = names.namespace(instance, plan.workspace.id);
  const meta = (name: string, kind: ObjectKind, extra: Record<string, string> = {}) => ({ name, namespace, labels: labelsFor(instance, plan.workspace, kind, extra) });
  const base: KubernetesObject[] = [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(SERVICE_ACCOUNT, 'account'), automountServiceAccountToken: false } as V1ServiceAccount & KubernetesObject,
    networkPolicy(meta('den-isolation', 'policy'), input.ingressFrom),
    ...quota(plan, meta),
    claim(meta(HOME_CLAIM, 'home'), plan.home.sizeBytes ?? DEFAULT_HOME_BYTES),
    ...plan.services.flatMap((service) => service.volumes.map((volume) =>
      claim(meta(names.volume(service.name, volume.name), 'volume', { [LABEL_SERVICE]: labelValue(service.name) }), volume.sizeBytes ?? DEFAULT_VOLUME_BYTES))),
  ];
  return {
    base,
    services: plan.services.map((service) => ({ plan: service, objects: serviceObjects(input, service, meta, input.serviceAgents?.[service.name]) })),
    workspace: workspaceDeployment(input, meta),
  };
}

type Meta = (name: string, kind: ObjectKind, extra?: Record<string, string>) => { name: string; namespace: string; labels: Record<string, string> };

function workspaceDeployment(input: RenderInput, meta: Meta): V1Deployment & KubernetesObject {
  const { plan } = input;
  const podLabels = { ...meta('', 'workspace').labels };
  const { cpu, memoryBytes } = plan.resources;
  const limits: Record<string, string> = {
    ...(cpu ? { cpu: `${Math.round(cpu * 1000)}m` } : {}),
    ...(memoryBytes ? { memory: String(memoryBytes) } : {}),
  };
  const env: V1EnvVar[] = [
    ...envVars({ HOME: HOME_PATH, ...plan.env, DEN_AGENT_URL: input.agentUrl }),
    ...secretsOf(plan, MAIN_AGENT).map((secret) => ({ name: secret.env, valueFrom: { secretKeyRef: { name: AGENT_SECRET, key: secretKey(secret.name) } } })),
  ];
  const mounts: V1VolumeMount[] = [{ name: 'home', mountPath: HOME_PATH }, ...input.agent.mounts];
  const gate = serviceGate(plan);
  const container: V1Container = {
    name: WORKSPACE_CONTAINER,
    image: plan.image,
    imagePullPolicy: 'IfNotPresent',
    command: gate && gate.length > 0 ? [AGENT_COMMAND[0], '-e', gatedAgent(gate)] : AGENT_COMMAND,
    args: [],
    env,
    workingDir: HOME_PATH,
    volumeMounts: mounts,
    // the limits are the requests too, so the quota (limits = requests) holds and the pod is Guaranteed on memory
    ...(Object.keys(limits).length > 0 ? { resources: { limits, requests: limits } } : {}),
    securityContext: { allowPrivilegeEscalation: false, runAsNonRoot: true, runAsUser: WORKSPACE_UID, runAsGroup: WORKSPACE_UID },
  };
  const volumes: V1Volume[] = [{ name: 'home', persistentVolumeClaim: { claimName: HOME_CLAIM } }, ...input.agent.volumes];

  return withPodSpecHash({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(WORKSPACE_DEPLOYMENT, 'workspace'),
    spec: {
      replicas: input.replicas,
      strategy: { type: 'Recreate' },
      selector: { matchLabels: podLabels },
      template: {
        metadata: {
          labels: podLabels,
          annotations: { [ANNOTATION_AGENT_REVISION]: plan.agent.revision, [ANNOTATION_SECRET_GENERATION]: input.secretGeneration },
        },
        spec: {
          serviceAccountName: SERVICE_ACCOUNT,
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          hostname: dnsLabel(plan.workspace.name),
          terminationGracePeriodSeconds: input.stopGraceSeconds ?? 10,
          securityContext: { runAsNonRoot: true, runAsUser: WORKSPACE_UID, runAsGroup: WORKSPACE_UID, fsGroup: WORKSPACE_UID },
          ...(input.agent.initContainers.length > 0 ? { initContainers: input.agent.initContainers } : {}),
          containers: [container],
          volumes,
        },
      },
    },
  });
}

/**
 * What the workspace's agent waits for before it starts, so the workspace pod can be scheduled,
 * get its home claim provisioned and its container started beside the services instead of after
 * them, while the agent (and the startup scripts it runs) still comes up only once every service
 * with a readiness check is ready: `service:port` of each, the Service in front of it. A Service
 * routes only to Ready pods (and refuses connections while it has none), so a connection through
 * it is the readiness den waits for, as the workspace sees it. undefined when a service with a
 * readiness check has no port (nothing to connect to): then the driver applies the workspace
 * after the services.
 */
export function serviceGate(plan: WorkspacePlan): string[] | undefined {
  const targets: string[] = [];
  for (const service of plan.services) {
    if (!service.readiness) continue;
    if (service.ports.length === 0) return undefined;
    targets.push(`${names.service(service.name)}:${service.ports[0].port}`);
  }
  return targets;
}

/**
 * The workspace container's program when the agent waits for services: in the agent's own Node
 * (from the image or the downloaded bundle), connect to each host:port every 100 ms until all
 * accept, saying every 10 s what it still waits for, then load the agent in the same process (a
 * gate of its own, an init container, would cost a container start).
 */
function gatedAgent(targets: string[]): string {
  return `const net = require('node:net');
const pending = new Set(${JSON.stringify(targets)});
const accepts = (target) => new Promise((resolve) => {
  const at = target.lastIndexOf(':');
  const socket = net.connect({ host: target.slice(0, at), port: Number(target.slice(at + 1)), timeout: 1000 });
  const end = (ok) => { socket.destroy(); resolve(ok); };
  socket.once('connect', () => end(true)).once('error', () => end(false)).once('timeout', () => end(false));
});
(async () => {
  for (let said = Date.now(); ; await new Promise((r) => setTimeout(r, 100))) {
    await Promise.all([...pending].map(async (target) => { if (await accepts(target)) pending.delete(target); }));
    if (pending.size === 0) break;
    if (Date.now() - said >= 10000) {
      said = Date.now();
      console.error('den: the agent waits for ' + [...pending].join(', ') + ' to accept connections');
    }
  }
  await import(${JSON.stringify(AGENT_COMMAND[1])});
})();`;
}

function serviceObjects(input: RenderInput, service: ServicePlan, meta: Meta, serviceAgent?: AgentDelivery): KubernetesObject[] {
  const { plan } = input;
  const agent = service.agent ? serviceAgentParts(service, serviceAgent) : undefined;
  const serviceLabel = { [LABEL_SERVICE]: labelValue(service.name) };
  const podLabels = { ...meta('', 'service', serviceLabel).labels };
  const firstPort = service.ports[0]?.port;
  const container: V1Container = {
    name: SERVICE_CONTAINER,
    image: service.image ?? plan.image,
    imagePullPolicy: 'IfNotPresent',
    // args, not command: like Docker's Cmd, the image's entrypoint stays
    ...(service.command ? { args: service.command } : {}),
    ...(service.workdir ? { workingDir: service.workdir.replace(/^~(?=\/|$)/, HOME_PATH) } : {}),
    env: envVars({ ...plan.env, ...service.env, HOST: '0.0.0.0', ...(firstPort !== undefined ? { PORT: String(firstPort) } : {}) }),
    ports: service.ports.map((p) => ({ containerPort: p.port })),
    ...(service.readiness ? { readinessProbe: probe(service.readiness) } : {}),
    volumeMounts: [...service.volumes.map((volume) => ({ name: dnsLabel(volume.name), mountPath: volume.path })), ...(agent?.mounts ?? [])],
    securityContext: { allowPrivilegeEscalation: false },
    // One stream through a terminal: the container runtime reads stdout and stderr apart and can
    // log them out of order (seen: a stderr line landing after later stdout lines), a pty keeps
    // the order the service wrote. Kubernetes logs do not tell the two streams apart anyway.
    tty: true,
  };
  const deployment: V1Deployment & KubernetesObject = withPodSpecHash({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(names.serviceDeployment(service.name), 'service', serviceLabel),
    spec: {
      replicas: input.replicas,
      strategy: { type: 'Recreate' },
      selector: { matchLabels: podLabels },
      template: {
        // with an agent, the Secret's generation too: a new token means a new pod, and a fresh agent in it
        metadata: { labels: podLabels, ...(agent ? { annotations: { [ANNOTATION_AGENT_REVISION]: service.agent!.revision, [ANNOTATION_SECRET_GENERATION]: input.secretGeneration } } : {}) },
        spec: {
          serviceAccountName: SERVICE_ACCOUNT,
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          hostname: names.service(service.name),
          terminationGracePeriodSeconds: input.stopGraceSeconds ?? 10,
          ...(agent && agent.initContainers.length > 0 ? { initContainers: agent.initContainers } : {}),
          containers: [container],
          volumes: [
            ...service.volumes.map((volume) => ({ name: dnsLabel(volume.name), persistentVolumeClaim: { claimName: names.volume(service.name, volume.name) } })),
            ...(agent?.volumes ?? []),
          ],
        },
      },
    },
  });
  if (service.ports.length === 0) return [deployment];
  const svc: V1Service & KubernetesObject = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(names.service(service.name), 'service', serviceLabel),
    spec: {
      selector: podLabels,
      ports: service.ports.map((p) => ({ name: `p${p.port}`, port: p.port, targetPort: p.port, protocol: 'TCP' })),
      // a service that is starting is reachable already: dependsOn order is den's, not the Service's
      publishNotReadyAddresses: false,
    },
  };
  return [deployment, svc];
}

/**
 * What a service pod needs for the agent den starts beside the service (driver.ts
 * ensureServiceAgent), the service's image and command untouched: its token as a read-only
 * Secret volume holding that one key, and the agent bundle when the image does not carry it
 * (the download init container into an emptyDir, mounted read-only where den's images have it).
 */
function serviceAgentParts(service: ServicePlan, delivery: AgentDelivery | undefined): Pick<AgentDelivery, 'initContainers' | 'volumes' | 'mounts'> {
  const token = { name: 'den-agent-token', mountPath: SERVICE_AGENT_TOKEN_DIR, readOnly: true };
  return {
    initContainers: delivery?.initContainers ?? [],
    volumes: [
      { name: token.name, secret: { secretName: AGENT_SECRET, items: [{ key: secretKey(agentTokenSecret(service.agent!.name)), path: SERVICE_AGENT_TOKEN_FILE }], defaultMode: 0o444 } },
      ...(delivery?.volumes ?? []),
    ],
    mounts: [token, ...(delivery?.mounts ?? [])],
  };
}

/** Kubernetes probes run at most once a second; den waits for Ready up to the template's timeout itself. */
function probe(readiness: ReadinessPlan): V1Probe {
  const timing = { periodSeconds: Math.max(1, Math.round(readiness.intervalMs / 1000)), timeoutSeconds: 1, failureThreshold: 3, successThreshold: 1 };
  if (readiness.http) return { httpGet: { port: readiness.http.port, path: readiness.http.path }, ...timing };
  if (readiness.tcp !== undefined) return { tcpSocket: { port: readiness.tcp }, ...timing };
  return { exec: { command: readiness.command ?? ['true'] }, ...timing };
}

function networkPolicy(metadata: ReturnType<Meta>, ingressFrom: V1NetworkPolicyPeer[]): V1NetworkPolicy & KubernetesObject {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata,
    spec: {
      podSelector: {},
      policyTypes: ['Ingress'],
      // client-node's model names the `from` field `_from`
      ingress: [{ _from: [{ podSelector: {} }, ...ingressFrom] }],
    },
  };
}

/**
 * The template's resources as a ceiling for the namespace: every pod (the workspace, each
 * service and, when the template has one-off tasks or tests, one one-off pod at a time) may use
 * up to the workspace's limits (LimitRange defaults for containers that set none), and the
 * namespace as a whole that much per pod (ResourceQuota).
 */
function quota(plan: WorkspacePlan, meta: Meta): KubernetesObject[] {
  const { cpu, memoryBytes } = plan.resources;
  if (!cpu && !memoryBytes) return [];
  const pods = 1 + plan.services.length + (plan.oneOffRuns ? 1 : 0);
  const each: Record<string, string> = {
    ...(cpu ? { cpu: `${Math.round(cpu * 1000)}m` } : {}),
    ...(memoryBytes ? { memory: String(memoryBytes) } : {}),
  };
  const hard: Record<string, string> = {
    // twice the pods: a Recreate rollout's old pod may still count while the new one is admitted
    pods: String(pods * 2),
    ...(cpu ? { 'limits.cpu': `${Math.round(cpu * 1000) * pods}m`, 'requests.cpu': `${Math.round(cpu * 1000) * pods}m` } : {}),
    ...(memoryBytes ? { 'limits.memory': String(memoryBytes * pods), 'requests.memory': String(memoryBytes * pods) } : {}),
  };
  return [
    { apiVersion: 'v1', kind: 'LimitRange', metadata: meta('den-limits', 'quota'), spec: { limits: [{ type: 'Container', _default: each, defaultRequest: each, max: each }] } } as V1LimitRange & KubernetesObject,
    { apiVersion: 'v1', kind: 'ResourceQuota', metadata: meta('den-quota', 'quota'), spec: { hard } } as V1ResourceQuota & KubernetesObject,
  ];
}

function claim(metadata: ReturnType<Meta>, bytes: number): V1PersistentVolumeClaim & KubernetesObject {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata,
    spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: String(bytes) } } },
  };
}

function envVars(env: Record<string, string>): V1EnvVar[] {
  return Object.entries(env).map(([name, value]) => ({ name, value }));
}


/** Adds ANNOTATION_POD_SPEC (a digest of the pod template) to a Deployment's pod template. */
function withPodSpecHash<T extends V1Deployment & KubernetesObject>(deployment: T): T {
  const template = deployment.spec!.template;
  const hash = createHash('sha256').update(JSON.stringify(template)).digest('hex').slice(0, 16);
  template.metadata = { ...template.metadata, annotations: { ...template.metadata?.annotations, [ANNOTATION_POD_SPEC]: hash } };
  return deployment;
}

/** the pod template digest a Deployment's pods carry */
export function podSpecHash(deployment: V1Deployment): string {
  return deployment.spec?.template.metadata?.annotations?.[ANNOTATION_POD_SPEC] ?? '';
}
