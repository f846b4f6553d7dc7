import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CoreV1Api, KubernetesObject, V1Container, V1Pod } from '@kubernetes/client-node';
import { AppError } from '../../../protocol/errors.ts';
import type { OneOffRequest, OneOffResult, WorkspaceIdentity } from '../driver.ts';
import {
  dnsLabel, HOME_CLAIM, HOME_PATH, LABEL_KIND, LABEL_SERVICE, labelsFor, labelValue, selector, SERVICE_ACCOUNT, SERVICE_CONTAINER,
} from './objects.ts';
import { IMAGE_REASONS } from './watch.ts';

/** a one-off pod's deadline (ISO time): past it (and a grace), the garbage collector deletes it */
export const ANNOTATION_DEADLINE = 'den.dev/deadline';
/** A one-off pod left behind (den stopped mid-run) is deleted by the garbage collector this long after its deadline. */
export const ONE_OFF_GC_GRACE_MS = 60_000;
/** How often the pod's state is read while it starts and after its log ended. */
const POLL_MS = 250;

export interface OneOffPodDeps {
  core: CoreV1Api;
  instance: string;
  namespace: string;
  /** the driver's log follower (a container's lines until it ends or the signal aborts) */
  followLog(namespace: string, pod: string, options: { signal: AbortSignal }): Promise<AsyncIterable<{ line: string }>>;
}

/**
 * Runs a command in a fresh pod from a running service's image (RuntimeDriver.runOneOff): the
 * image, environment, working directory and security context are read from the service's
 * Deployment, so the one-off has what the plan gave the service; it is in the workspace's
 * namespace (services by name, the same NetworkPolicy) with the workspace's home claim mounted
 * read-only at /home/den, on the workspace pod's node (the claim is ReadWriteOnce). No agent:
 * restartPolicy Never, its log followed through the API, its exit code read from its status.
 * Deleted at its time limit, when `signal` aborts, and always once it ended; the kubelet ends it
 * at activeDeadlineSeconds, and the garbage collector deletes it after its deadline annotation,
 * if den went away mid-run.
 */
export async function runOneOffPod(deps: OneOffPodDeps, workspace: WorkspaceIdentity, request: OneOffRequest): Promise<OneOffResult> {
  const { core, namespace } = deps;
  const template = await serviceTemplate(core, namespace, request.service);
  if (!template) {
    throw new AppError('WORKSPACE_NOT_RUNNING',
      `Service ${request.service} of ${workspace.ownerName}/${workspace.name} is not running, so den has no image and environment to start a one-off pod from. Start the workspace (den start ${workspace.ownerName}/${workspace.name}) and try again.`);
  }
  const node = await workspaceNode(core, namespace);
  const deadline = Date.now() + request.timeoutMs;
  const pod = oneOffPod(deps.instance, workspace, request, template, node, deadline);
  const name = pod.metadata!.name!;
  const stop = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    stop.abort();
  }, request.timeoutMs);
  const abort = () => stop.abort();
  request.signal?.addEventListener('abort', abort, { once: true });
  if (request.signal?.aborted) stop.abort();
  try {
    if (stop.signal.aborted) return { exitCode: undefined, timedOut: false };
    await core.createNamespacedPod({ namespace, body: pod }).catch((error: unknown) => { throw quotaSentence(error) ?? error; });
    if (!(await started(core, namespace, name, stop.signal))) return { exitCode: undefined, timedOut };
    const lines = await deps.followLog(namespace, name, { signal: stop.signal });
    for await (const { line } of lines) request.onOutput('stdout', `${line}\n`);
    const exitCode = await exitCodeOf(core, namespace, name, stop.signal);
    return { exitCode: stop.signal.aborted ? undefined : exitCode, timedOut };
  } finally {
    clearTimeout(timer);
    request.signal?.removeEventListener('abort', abort);
    await core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0 }).catch(() => undefined);
  }
}

export function oneOffPod(
  instance: string, workspace: WorkspaceIdentity, request: OneOffRequest, template: ServiceTemplate, node: string | undefined, deadline: number,
): V1Pod & KubernetesObject {
  const { container, podSecurity } = template;
  const oneOff: V1Container = {
    name: SERVICE_CONTAINER,
    image: container.image,
    imagePullPolicy: container.imagePullPolicy ?? 'IfNotPresent',
    command: request.command,
    ...(container.env ? { env: container.env } : {}),
    ...(container.workingDir ? { workingDir: container.workingDir } : {}),
    volumeMounts: [{ name: 'home', mountPath: HOME_PATH, readOnly: true }],
    securityContext: { ...container.securityContext, allowPrivilegeEscalation: false },
  };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: `run-${dnsLabel(request.service, 40)}-${randomBytes(4).toString('hex')}`,
      labels: labelsFor(instance, workspace, 'one-off', { [LABEL_SERVICE]: labelValue(request.service) }),
      annotations: { [ANNOTATION_DEADLINE]: new Date(deadline).toISOString() },
    },
    spec: {
      restartPolicy: 'Never',
      // the kubelet's own end of it, should den not be there to delete it
      activeDeadlineSeconds: Math.max(1, Math.ceil(request.timeoutMs / 1000)),
      serviceAccountName: SERVICE_ACCOUNT,
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      terminationGracePeriodSeconds: 0,
      ...(podSecurity ? { securityContext: podSecurity } : {}),
      ...(node ? { affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: [node] }] }] } } } } : {}),
      containers: [oneOff],
      volumes: [{ name: 'home', persistentVolumeClaim: { claimName: HOME_CLAIM, readOnly: true } }],
    },
  };
}

export interface ServiceTemplate {
  container: V1Container;
  podSecurity?: NonNullable<V1Pod['spec']>['securityContext'];
}

/** The service container of a running service's Deployment, or undefined when it is not running. */
async function serviceTemplate(core: CoreV1Api, namespace: string, service: string): Promise<ServiceTemplate | undefined> {
  const pods = await core.listNamespacedPod({ namespace, labelSelector: `${LABEL_KIND}=service,${LABEL_SERVICE}=${labelValue(service)}` }).catch(() => undefined);
  const running = pods?.items.find((p) => !p.metadata?.deletionTimestamp && p.status?.containerStatuses?.some((s) => s.name === SERVICE_CONTAINER && s.state?.running));
  const container = running?.spec?.containers.find((c) => c.name === SERVICE_CONTAINER);
  return container ? { container, podSecurity: running?.spec?.securityContext } : undefined;
}

/** The node the workspace pod runs on: the home claim is ReadWriteOnce, so a second mount must be on that node. */
async function workspaceNode(core: CoreV1Api, namespace: string): Promise<string | undefined> {
  const pods = await core.listNamespacedPod({ namespace, labelSelector: `${LABEL_KIND}=workspace` }).catch(() => undefined);
  return pods?.items.find((p) => !p.metadata?.deletionTimestamp && p.spec?.nodeName)?.spec?.nodeName;
}

/** Waits until the container runs or has ended; false when `signal` aborted first. Throws a sentence when its image cannot be had. */
async function started(core: CoreV1Api, namespace: string, name: string, signal: AbortSignal): Promise<boolean> {
  while (!signal.aborted) {
    const pod = await readPod(core, namespace, name);
    if (!pod) return false;
    const status = pod.status?.containerStatuses?.find((s) => s.name === SERVICE_CONTAINER);
    if (status?.state?.running || status?.state?.terminated || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return true;
    const waiting = status?.state?.waiting;
    if (waiting?.reason && (IMAGE_REASONS.has(waiting.reason) || waiting.reason === 'RunContainerError')) {
      throw new AppError('RUNTIME_ERROR',
        `Kubernetes could not start the one-off pod from image ${status!.image} (${waiting.reason}: ${waiting.message ?? 'no message'}). Load the image onto the nodes or fix the service's image in the template.`);
    }
    await sleep(POLL_MS, undefined, { signal }).catch(() => undefined);
  }
  return false;
}

/** The container's exit code, once the kubelet reports it ended. */
async function exitCodeOf(core: CoreV1Api, namespace: string, name: string, signal: AbortSignal): Promise<number | undefined> {
  while (!signal.aborted) {
    const pod = await readPod(core, namespace, name);
    if (!pod) return undefined; // deleted before it ended (the garbage collector, by hand)
    const terminated = pod.status?.containerStatuses?.find((s) => s.name === SERVICE_CONTAINER)?.state?.terminated;
    if (terminated) return terminated.exitCode;
    if (pod.status?.phase === 'Failed') return undefined; // ended without a container status (its deadline, an eviction)
    await sleep(POLL_MS, undefined, { signal }).catch(() => undefined);
  }
  return undefined;
}

/** A pod the workspace's ResourceQuota has no room for, as a sentence (the quota holds one one-off at a time). */
function quotaSentence(error: unknown): AppError | undefined {
  const body = String((error as { body?: unknown } | null)?.body ?? '');
  if (!/exceeded quota/.test(body)) return undefined;
  return new AppError('RUNTIME_ERROR',
    'Kubernetes refused the one-off pod: the workspace\'s resource quota has no room for it (its template sets resources, and the quota leaves room for one one-off run at a time). Wait for the running one to end and try again.');
}

/** The pod, or undefined once it is gone; listed by name, as den's account may list pods but not get one. */
async function readPod(core: CoreV1Api, namespace: string, name: string): Promise<V1Pod | undefined> {
  const pods = await core.listNamespacedPod({ namespace, fieldSelector: `metadata.name=${name}` });
  return pods.items[0];
}

/**
 * One-off pods past their deadline (and the grace): left by a den that stopped mid-run. Run by
 * the garbage collector; a run in progress on any replica is before its deadline.
 */
export async function deleteExpiredOneOffs(core: CoreV1Api, instance: string, now: number): Promise<number> {
  const pods = await core.listPodForAllNamespaces({ labelSelector: `${selector(instance)},${LABEL_KIND}=one-off` });
  const expired = pods.items.filter((pod) => !(Date.parse(pod.metadata?.annotations?.[ANNOTATION_DEADLINE] ?? '') + ONE_OFF_GC_GRACE_MS > now));
  await Promise.all(expired.map((pod) => core.deleteNamespacedPod({ name: pod.metadata!.name!, namespace: pod.metadata!.namespace!, gracePeriodSeconds: 0 }).catch(() => undefined)));
  return expired.length;
}
