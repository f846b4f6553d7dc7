import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import {
  ApiException, AppsV1Api, CoreV1Api, KubeConfig, KubernetesObjectApi, PatchStrategy, Watch,
  type CoreV1Event, type KubernetesObject, type V1Deployment, type V1NetworkPolicyPeer, type V1Pod,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { AppError } from '../../../protocol/errors.ts';
import { secretsOf, type AgentPlan, type DriverContext, type RuntimeDriver, type RuntimeStatus, type ServicePlan, type StartContext, type WorkspaceIdentity, type WorkspacePlan } from '../driver.ts';
import { createVerbLocks } from '../verb-locks.ts';
import { AGENT_DOWNLOAD_CONTAINER, BAKED_AGENT, createAgentAccess, downloadedAgent, type AgentDelivery } from './agent-delivery.ts';
import {
  AGENT_SECRET, ANNOTATION_POD_SPEC, ANNOTATION_SECRET_GENERATION, LABEL_INSTANCE, LABEL_KIND, LABEL_SERVICE, LABEL_WORKSPACE, labelsFor, labelValue,
  names, namespaceObject, podSpecHash, renderWorkspace, secretKey, selector, SERVICE_CONTAINER, serviceGate, WORKSPACE_CONTAINER, WORKSPACE_DEPLOYMENT,
} from './objects.ts';
import { beyondEveryNode } from './capacity.ts';
import { deleteExpiredOneOffs, runOneOffPod } from './one-off.ts';
import { createServiceAgentKeeper, ensureServiceAgent } from './service-agent.ts';
import { createClusterWatch, IMAGE_REASONS } from './watch.ts';

/** den's workspace images, which carry the agent (workspace-images/: den/base, den/node) */
/** den's field manager for server-side apply: the fields den sets are den's, others' stay theirs. */
export const FIELD_MANAGER = 'den';
const LOG_TAIL_LINES = 20;
/** a followed log line longer than this is passed on in pieces */
const MAX_LINE_CHARS = 64 * 1024;
/** build-log lines kept of one service's output */
const SERVICE_LOG_LINES = 200;
const IN_CLUSTER_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';
/** After den's own verb on a workspace ends, what its pods still report is den's doing for this long. */
const OWN_VERB_GRACE_MS = 3_000;
/** How long a failed start waits for the Warning event behind the failure, to quote it. */
const EVENT_GRACE_MS = 3_000;
/** How long a delete waits for the namespace (and everything in it) to be gone. */
const NAMESPACE_DELETE_TIMEOUT_MS = 120_000;
const NAMESPACE_RECHECK_MS = 500;

export interface KubernetesDriverOptions {
  log: Logger;
  /** a loaded configuration; else from `kubeconfig` (a path), else KUBECONFIG / ~/.kube/config / in-cluster */
  kubeConfig?: KubeConfig;
  kubeconfig?: string;
  /** a context of the kubeconfig other than its current one */
  context?: string;
  /** which den deployment this is (label den.dev/instance, namespace prefix; default `den`) */
  instance?: string;
  /** where the agent archive served by GET /api/v1/agent/bundle is assembled (the server's data dir) */
  dataDir: string;
  /** the URL agents in pods dial, when it is not the access URL (DEN_AGENT_ACCESS_URL) */
  agentUrl?: string;
  /** the static busybox image the agent download runs in (default busybox:1.37) */
  downloaderImage?: string;
  /** how long a pod may take to be scheduled, get its image and start (default 180 s) */
  startTimeoutMs?: number;
  /** seconds a container gets between SIGTERM and SIGKILL on stop (default 10) */
  stopGraceSeconds?: number;
}

export interface KubernetesDriver extends RuntimeDriver {
  collectGarbage(exists: (workspaceId: string) => boolean | Promise<boolean>): Promise<string[]>;
  /** the namespace a workspace's objects live in */
  namespaceOf(workspaceId: string): string;
}

/**
 * The kubernetes runtime: each workspace is a namespace holding its Deployment (the agent as its
 * command, home on a PVC, non-root, no service-account token), the agent token's Secret, the
 * environment's services (Deployment + Service each, by name), a NetworkPolicy, and a
 * ResourceQuota + LimitRange when the template sets resources. See docs/kubernetes.md.
 */
export async function createKubernetesDriver(options: KubernetesDriverOptions): Promise<KubernetesDriver> {
  const kc = options.kubeConfig ?? loadKubeConfig(options.kubeconfig, options.context);
  const core = kc.makeApiClient(CoreV1Api);
  const apps = kc.makeApiClient(AppsV1Api);
  const objects = KubernetesObjectApi.makeApiClient(kc);
  const instance = options.instance ?? 'den';
  const startTimeoutMs = options.startTimeoutMs ?? 180_000;
  const downloaderImage = options.downloaderImage ?? 'busybox:1.37';
  const namespacePrefix = names.namespacePrefix(instance);
  const isOurs = (namespace: string) => namespace.startsWith(namespacePrefix);
  const listNodes = async () => (await core.listNode()).items;
  const access = createAgentAccess(options.agentUrl, listNodes, options.log);
  const watch = createClusterWatch(kc, instance, isOurs, options.log);
  await watch.ready.catch((error: unknown) => { throw toAppError(error, 'watching den\'s pods'); });
  const ingressFrom = await denPeers(listNodes);

  const starting = new Set<string>();
  const locks = createVerbLocks();
  const agentKeeper = createServiceAgentKeeper({ kc, watch, busy: (workspaceId) => locks.active(workspaceId), log: options.log });
  const namespaceOf = (workspaceId: string) => names.namespace(instance, workspaceId);

  /** One verb at a time per workspace; Kubernetes' failures become sentences saying what den was doing. */
  function verb<T>(workspaceId: string, doing: string, work: () => Promise<T>): Promise<T> {
    return locks.serialize(workspaceId, async () => {
      try {
        return await work();
      } catch (error) {
        throw toAppError(error, doing);
      }
    });
  }

  const apply = <T extends KubernetesObject>(object: T) => objects.patch(object, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);

  async function ensureNamespace(workspace: WorkspaceIdentity): Promise<string> {
    const namespace = namespaceOf(workspace.id);
    const existing = await ignoreMissing(core.readNamespace({ name: namespace }));
    const labels = existing?.metadata?.labels ?? {};
    if (existing && (labels[LABEL_WORKSPACE] !== workspace.id || labels[LABEL_INSTANCE] !== instance)) {
      throw new AppError('RUNTIME_ERROR',
        `The namespace ${namespace} already exists and was not made by this den for this workspace, so den will not use it. Remove or rename that namespace, or give this den another instance name (DEN_INSTANCE).`);
    }
    if (existing?.metadata?.deletionTimestamp) {
      throw new AppError('RUNTIME_ERROR', `The namespace ${namespace} of this workspace is still being deleted. Wait until it is gone and start the workspace again.`);
    }
    await apply(namespaceObject(instance, workspace));
    return namespace;
  }

  /**
   * The agent Secret's generation. The Secret is created (each agent's token asked for) only when
   * it is missing, so re-applying a running workspace issues no token; its generation is in the
   * pod templates of the workspace and of services with an agent, so a new token reaches a new
   * pod. An agent the plan adds (a service that now has one) gets its token added, the others kept.
   */
  async function ensureSecret(plan: WorkspacePlan, namespace: string, context: StartContext): Promise<string> {
    const existing = await ignoreMissing(core.readNamespacedSecret({ name: AGENT_SECRET, namespace }));
    const generation = existing?.metadata?.annotations?.[ANNOTATION_SECRET_GENERATION];
    const tokens = async (secrets: typeof plan.secrets) => Object.fromEntries(await Promise.all(secrets.map(async (secret) => [secretKey(secret.name), await context.secret(secret.name)] as const)));
    if (existing && generation) {
      const missing = plan.secrets.filter((secret) => existing.data?.[secretKey(secret.name)] === undefined);
      if (missing.length > 0) {
        await objects.patch({ apiVersion: 'v1', kind: 'Secret', metadata: { name: AGENT_SECRET, namespace }, stringData: await tokens(missing) } as KubernetesObject,
          undefined, undefined, FIELD_MANAGER, undefined, PatchStrategy.MergePatch);
      }
      return generation;
    }
    if (existing) await ignoreMissing(core.deleteNamespacedSecret({ name: AGENT_SECRET, namespace }));
    const fresh = randomUUID();
    await core.createNamespacedSecret({
      namespace,
      body: {
        metadata: { name: AGENT_SECRET, labels: labelsFor(instance, plan.workspace, 'secret'), annotations: { [ANNOTATION_SECRET_GENERATION]: fresh } },
        type: 'Opaque',
        stringData: await tokens(plan.secrets),
      },
    });
    return fresh;
  }

  /** The pod parts that carry out one agent's delivery (chosen by the planner from agentDelivery below). */
  function agentDelivery(plan: WorkspacePlan, agentPlan: AgentPlan, agentUrl: string): AgentDelivery {
    const delivery = agentPlan.delivery;
    if (delivery.kind === 'image') return BAKED_AGENT;
    if (delivery.kind !== 'download') throw new AppError('RUNTIME_ERROR', `The kubernetes runtime cannot deliver the agent by ${delivery.kind}; it runs den's images or downloads the agent.`);
    const token = secretsOf(plan, agentPlan.name)[0];
    if (!token) throw new Error('The plan names no agent token, so the agent download cannot authenticate.');
    // agents dial agentUrl (the node relay when den listens on loopback), so the bundle comes from there too
    return downloadedAgent({ serverUrl: agentUrl, archive: { sha256: delivery.sha256 }, downloaderImage, tokenEnv: token.env, tokenSecret: AGENT_SECRET, tokenKey: secretKey(token.name) });
  }

  async function removeUnplannedServices(namespace: string, planned: Set<string>, context: DriverContext): Promise<void> {
    const kindSelector = `${selector(instance)},${LABEL_KIND}=service`;
    const [deployments, services] = await Promise.all([
      apps.listNamespacedDeployment({ namespace, labelSelector: kindSelector }),
      core.listNamespacedService({ namespace, labelSelector: kindSelector }),
    ]);
    for (const deployment of deployments.items) {
      const service = deployment.metadata?.labels?.[LABEL_SERVICE] ?? '';
      if (planned.has(service)) continue;
      await ignoreMissing(apps.deleteNamespacedDeployment({ name: deployment.metadata!.name!, namespace, propagationPolicy: 'Background' }));
      context.log(`Removed service ${service}: the template no longer has it.`);
    }
    for (const service of services.items) {
      if (planned.has(service.metadata?.labels?.[LABEL_SERVICE] ?? '')) continue;
      await ignoreMissing(core.deleteNamespacedService({ name: service.metadata!.name!, namespace }));
    }
  }

  async function startService(plan: WorkspacePlan, service: ServicePlan, rendered: KubernetesObject[], namespace: string, context: StartContext): Promise<void> {
    const [deployment] = rendered as [V1Deployment & KubernetesObject];
    const before = await ignoreMissing(apps.readNamespacedDeployment({ name: deployment.metadata!.name!, namespace }));
    for (const object of rendered) await apply(object);
    const unchanged = before !== undefined && podSpecHash(before) === podSpecHash(deployment) && before.spec?.replicas === deployment.spec?.replicas;
    const what = `service ${service.name}`;
    const labelSelector = `${LABEL_SERVICE}=${labelValue(service.name)}`;
    const pod = await waitForPod({ namespace, labelSelector, hash: podSpecHash(deployment), container: SERVICE_CONTAINER, what, until: 'running', timeoutMs: startTimeoutMs, context });
    if (!unchanged) context.log(`Started service ${service.name} (${service.image ?? plan.image}).`);
    if (!service.readiness) {
      if (!unchanged) await copyServiceLog(namespace, pod, service.name, context);
      await startServiceAgent(plan, service, namespace, pod, context);
      return;
    }
    try {
      await waitForPod({ namespace, labelSelector, hash: podSpecHash(deployment), container: SERVICE_CONTAINER, what, until: 'ready', timeoutMs: service.readiness.timeoutMs, context });
    } catch (error) {
      const tail = await podLogTail(namespace, pod.metadata!.name!, SERVICE_CONTAINER, LOG_TAIL_LINES);
      if (error instanceof AppError && error.code === 'RUNTIME_ERROR') {
        throw new AppError('RUNTIME_ERROR',
          `Service ${service.name} failed to start: ${error.message} Check its image, command and readiness check in the template.`,
          { detail: tail.length > 0 ? `Last lines of its log:\n${tail.join('\n')}` : 'It wrote nothing to its log.' });
      }
      throw error;
    }
    if (unchanged) context.log(`Service ${service.name} is unchanged and running: skipped.`);
    else await copyServiceLog(namespace, pod, service.name, context);
    context.log(`Service ${service.name} is ready.`);
    await startServiceAgent(plan, service, namespace, pod, context);
  }

  /**
   * Starts the agent beside a service (ServicePlan.agent) inside its container, through the
   * pods/exec API, detached, as the docker runtime does with `docker exec -d`: the service's image
   * and command stay as they are. A running one is left alone (re-applying changes nothing); one
   * that is gone (the container restarted: the reconciler sees the agent lost) is started again.
   */
  async function startServiceAgent(plan: WorkspacePlan, service: ServicePlan, namespace: string, pod: V1Pod, context: DriverContext): Promise<void> {
    if (!service.agent) return;
    const token = secretsOf(plan, service.agent.name)[0];
    if (!token) throw new Error(`The plan names no token for the agent of service ${service.name}; this is a bug in den.`);
    const agentUrl = await access.urlFor(service.agent.url);
    const found = await ensureServiceAgent(kc, { namespace, pod: pod.metadata!.name!, agentUrl, tokenEnv: token.env }).catch((error: Error) => {
      throw new AppError('RUNTIME_ERROR', `The agent of service ${service.name} could not be started: ${error.message}. Its image must be glibc-based for den's agent to run in it.`);
    });
    agentKeeper.remember(plan.workspace.id, namespace, labelValue(service.name), pod, { agentUrl, tokenEnv: token.env });
    context.log(found === 'running'
      ? `The agent of service ${service.name} is already running.`
      : `Started the agent of service ${service.name} beside it (${service.agent.delivery.kind === 'image' ? 'from its image' : 'from the downloaded bundle, mounted read-only'}).`);
  }

  /** A started service's output so far, into the build log (Kubernetes keeps it with the pod). */
  async function copyServiceLog(namespace: string, pod: V1Pod, service: string, context: DriverContext): Promise<void> {
    for (const line of await podLogTail(namespace, pod.metadata!.name!, SERVICE_CONTAINER, SERVICE_LOG_LINES)) context.log(`[${service}] ${line}`, 'stdout');
  }

  /** the last lines of a container's log (`previous`: of its run before the current one) */
  async function podLogTail(namespace: string, pod: string, container: string, lines: number, previous = false): Promise<string[]> {
    const text = await core.readNamespacedPodLog({ name: pod, namespace, container, tailLines: lines, previous }).catch(() => '');
    return splitLines(text);
  }

  interface PodWait {
    namespace: string;
    labelSelector: string;
    /** the pod template digest of the Deployment just applied */
    hash: string;
    container: string;
    what: string;
    until: 'running' | 'ready';
    timeoutMs: number;
    context: DriverContext;
  }

  /**
   * Waits on the shared pod watch until a pod of the applied template is running (or Ready),
   * failing at once on what will not resolve by itself (an image that cannot be pulled, a
   * container that keeps exiting, an agent download that failed, a quota refusal), and putting
   * the Warning events of the namespace into the build log as they come.
   */
  function waitForPod(wait: PodWait): Promise<V1Pod> {
    const [key, value] = wait.labelSelector.split('=');
    const reported = new Set<string>();
    let lastWarning = '';
    /** Puts a relevant Warning into the build log once; returns its sentence when it was new. */
    const logWarning = (event: CoreV1Event): string | undefined => {
      const id = `${event.metadata?.uid}/${event.count ?? ''}`;
      if (reported.has(id) || !relevant(event, wait)) return undefined;
      const sentence = eventSentence(event, wait.what);
      reported.add(id);
      lastWarning = sentence;
      wait.context.log(sentence);
      return sentence;
    };
    return new Promise<V1Pod>((resolve, reject) => {
      const done = (error?: Error, pod?: V1Pod) => {
        clearTimeout(timer);
        unsubscribe();
        wait.context.signal.removeEventListener('abort', onAbort);
        if (error) reject(error);
        else resolve(pod!);
      };
      let failing = false;
      const check = (event?: CoreV1Event) => {
        if (failing) return;
        if (event) {
          const sentence = logWarning(event);
          if (sentence && event.reason === 'FailedCreate' && /exceeded quota|forbidden/i.test(event.message ?? '')) {
            return done(new AppError('RUNTIME_ERROR', `${sentence} Lower the resources the template asks for, or raise the namespace's quota.`));
          }
          // A pod larger than every node never fits: fail now rather than at the timeout (a pod
          // that waits for room taken by others keeps waiting).
          const unschedulable = sentence && event.reason === 'FailedScheduling' && /Insufficient/i.test(event.message ?? '')
            ? watch.pods(wait.namespace).find((pod) => pod.metadata?.name === event.involvedObject?.name) : undefined;
          if (unschedulable) {
            void listNodes().then((nodes) => {
              const beyond = beyondEveryNode(unschedulable, nodes);
              if (beyond && !failing) {
                failing = true;
                done(new AppError('RUNTIME_ERROR', `${capitalize(wait.what)} asks for more than any node of the cluster has: ${beyond}. Lower the resources in the template, or add a larger node. ${sentence}`));
              }
            }, () => undefined);
          }
        }
        const pods = watch.pods(wait.namespace).filter((pod) => pod.metadata?.labels?.[key] === value
          && pod.metadata?.annotations?.[ANNOTATION_POD_SPEC] === wait.hash && !pod.metadata?.deletionTimestamp);
        for (const pod of pods) {
          const failure = podFailure(pod, wait.container);
          if (failure) {
            failing = true; // later updates of the pod (the kubelet restarting it) change nothing now
            return void failureWithLogs(pod, failure).then((error) => done(error), (error: Error) => done(error));
          }
          const status = pod.status?.containerStatuses?.find((s) => s.name === wait.container);
          if (wait.until === 'running' ? status?.state?.running : status?.ready) return done(undefined, pod);
        }
      };
      const failureWithLogs = async (pod: V1Pod, failure: PodFailure) => {
        // the log first: the kubelet restarts the failed container soon, and its new run's log is empty
        const tail = failure.logs ? await podLogTail(wait.namespace, pod.metadata!.name!, failure.container, LOG_TAIL_LINES, failure.previous) : [];
        // The pod's status often says it before the Warning event arrives: give the event a moment, for the build log.
        await waitUntil(() => {
          for (const event of watch.warnings(wait.namespace)) logWarning(event);
          return reported.size > 0;
        }, EVENT_GRACE_MS, 100);
        return new AppError('RUNTIME_ERROR', `${capitalize(wait.what)}: ${failure.sentence}`, tail.length > 0 ? { detail: `Last lines of its log:\n${tail.join('\n')}` } : {});
      };
      const onAbort = () => done(wait.context.signal.reason instanceof Error ? wait.context.signal.reason : new Error('The build was canceled.'));
      const timer = setTimeout(() => done(new AppError('RUNTIME_ERROR',
        `${capitalize(wait.what)} was not ${wait.until === 'ready' ? 'ready' : 'running'} after ${Math.round(wait.timeoutMs / 1000)} s${lastWarning ? ` (last Kubernetes warning: ${lastWarning})` : ''}.`)), wait.timeoutMs);
      const unsubscribe = watch.onChange(wait.namespace, ({ event }) => check(event));
      wait.context.signal.addEventListener('abort', onAbort, { once: true });
      if (wait.context.signal.aborted) return onAbort();
      for (const event of watch.warnings(wait.namespace)) check(event);
      check();
    });
  }

  /**
   * Applies the workspace's objects and waits until its services are ready and its pod runs.
   * What can start at once does: each service as soon as the services it depends on are ready
   * (only `dependsOn` orders them), and the workspace pod beside them, its agent held back by its
   * own program until the services answer through their Services (objects.ts serviceGate), so
   * its startup scripts see them ready as on the docker runtime (ADR 0022). The first failure
   * ends every other wait.
   */
  async function startWorkspace(plan: WorkspacePlan, context: StartContext): Promise<void> {
    const namespace = await ensureNamespace(plan.workspace);
    const [agentUrl, generation] = await Promise.all([access.urlFor(plan.agent.url), ensureSecret(plan, namespace, context)]);
    const agent = agentDelivery(plan, plan.agent, agentUrl);
    const serviceAgents = Object.fromEntries(plan.services.flatMap((service) => (service.agent ? [[service.name, agentDelivery(plan, service.agent, agentUrl)]] : [])));
    const rendered = renderWorkspace({ instance, plan, agentUrl, agent, serviceAgents, secretGeneration: generation, replicas: 1, ingressFrom, stopGraceSeconds: options.stopGraceSeconds });
    await Promise.all([
      ...rendered.base.map((object) => apply(object)),
      removeUnplannedServices(namespace, new Set(plan.services.map((service) => labelValue(service.name))), context),
    ]);
    const failed = new AbortController();
    const inner: StartContext = { ...context, signal: AbortSignal.any([context.signal, failed.signal]) };
    let first: { error: unknown } | undefined;
    const track = (work: Promise<void>) => work.catch((error: unknown) => {
      if (!first) {
        first = { error };
        failed.abort(error);
      }
      throw error;
    });
    const byName = new Map(rendered.services.map((entry) => [entry.plan.name, entry.objects]));
    // the planner lists services in dependsOn order, so a service's dependencies are already in `ready`
    const ready = new Map<string, Promise<void>>();
    for (const service of plan.services) {
      const after = service.dependsOn.flatMap((name) => ready.get(name) ?? []);
      ready.set(service.name, track(Promise.all(after).then(() => startService(plan, service, byName.get(service.name)!, namespace, inner))));
    }
    const gate = serviceGate(plan);
    const workspace = track(gate
      ? startWorkspacePod(plan, rendered.workspace, namespace, agent, gate.length > 0, inner)
      : Promise.all(ready.values()).then(() => startWorkspacePod(plan, rendered.workspace, namespace, agent, false, inner)));
    await Promise.allSettled([...ready.values(), workspace]);
    if (first) throw first.error;
  }

  async function startWorkspacePod(plan: WorkspacePlan, deployment: V1Deployment & KubernetesObject, namespace: string, agent: AgentDelivery, gated: boolean, context: StartContext): Promise<void> {
    const before = await ignoreMissing(apps.readNamespacedDeployment({ name: WORKSPACE_DEPLOYMENT, namespace }));
    await apply(deployment);
    const hash = podSpecHash(deployment);
    if (before && podSpecHash(before) === hash && before.spec?.replicas === 1) {
      context.log('The workspace pod is already running.');
      return;
    }
    context.log(`Applied the workspace Deployment in namespace ${namespace} (image ${plan.image}, agent ${agent.kind === 'baked' ? 'from the image' : 'downloaded by an init container'}${gated ? '; its agent starts once the services answer' : ''}).`);
    if (plan.resources.pids) context.log(`The pids limit (${plan.resources.pids}) is not applied: Kubernetes sets process limits per node, not per pod.`);
    await waitForPod({ namespace, labelSelector: `${LABEL_KIND}=workspace`, hash, container: WORKSPACE_CONTAINER, what: 'the workspace pod', until: 'running', timeoutMs: startTimeoutMs, context });
    context.log('The workspace pod is running.');
  }

  /** Scales the workspace and its services to zero and drops the agent token; claims stay. */
  async function scaleDown(workspaceId: string, context?: DriverContext): Promise<void> {
    const namespace = namespaceOf(workspaceId);
    agentKeeper.forget(namespace);
    const deployments = await ignoreMissing(apps.listNamespacedDeployment({ namespace, labelSelector: selector(instance, workspaceId) }));
    for (const deployment of deployments?.items ?? []) {
      if (deployment.spec?.replicas === 0) continue;
      await ignoreMissing(objects.patch({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: deployment.metadata!.name!, namespace }, spec: { replicas: 0 } },
        undefined, undefined, FIELD_MANAGER, undefined, PatchStrategy.MergePatch));
    }
    await ignoreMissing(core.deleteNamespacedSecret({ name: AGENT_SECRET, namespace }));
    await waitUntil(() => watch.pods(namespace).length === 0, 60_000);
    if ((deployments?.items.length ?? 0) > 0) context?.log('Scaled the workspace and its services to zero; their volumes stay.');
  }

  async function removeNamespace(workspaceId: string, context?: DriverContext): Promise<void> {
    const namespace = namespaceOf(workspaceId);
    agentKeeper.forget(namespace);
    const existing = await ignoreMissing(core.readNamespace({ name: namespace }));
    if (!existing) return;
    if (existing.metadata?.labels?.[LABEL_INSTANCE] !== instance) return; // not ours: never deleted
    await ignoreMissing(core.deleteNamespace({ name: namespace, propagationPolicy: 'Background' }));
    context?.log(`Deleting namespace ${namespace} and everything in it.`);
    const gone = await namespaceGone(namespace, NAMESPACE_DELETE_TIMEOUT_MS);
    if (gone) watch.forget(namespace);
    else throw new AppError('RUNTIME_ERROR', `Namespace ${namespace} was still being deleted after 120 s. Check what holds it (kubectl describe namespace ${namespace}); den deletes it again on the next delete or garbage collection.`);
  }

  /** Whether the namespace is gone within the time: one watch on it, not a read every half second. */
  async function namespaceGone(namespace: string, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const list = await core.listNamespace({ fieldSelector: `metadata.name=${namespace}` });
      if (list.items.length === 0) return true;
      const watched = Date.now();
      // until it is deleted, the watch ends (the API server's timeout, a network fault) or the time is up; then look again
      await new Promise<void>((resolve) => {
        let controller: AbortController | undefined;
        let finished = false;
        const finish = () => {
          finished = true;
          clearTimeout(timer);
          controller?.abort();
          resolve();
        };
        const timer = setTimeout(finish, Math.max(0, deadline - Date.now()));
        new Watch(kc).watch('/api/v1/namespaces', { fieldSelector: `metadata.name=${namespace}`, resourceVersion: list.metadata?.resourceVersion },
          (phase) => { if (phase === 'DELETED') finish(); }, finish)
          .then((started) => { controller = started; if (finished) started.abort(); }, finish);
      });
      // a watch refused at once (an account without watch on namespaces) is not a busy loop: looking again every half second at most
      if (Date.now() - watched < NAMESPACE_RECHECK_MS) await new Promise((resolve) => setTimeout(resolve, NAMESPACE_RECHECK_MS));
    }
    return (await core.listNamespace({ fieldSelector: `metadata.name=${namespace}` })).items.length === 0;
  }

  async function namespaceIds(): Promise<string[]> {
    const list = await core.listNamespace({ labelSelector: selector(instance) });
    return list.items.map((ns) => ns.metadata?.labels?.[LABEL_WORKSPACE]).filter((id): id is string => !!id);
  }

  const driver: KubernetesDriver = {
    name: 'kubernetes',
    isolation: { sandboxed: true },
    // pids limits are not per pod in Kubernetes (see startWorkspace).
    capabilities: Object.freeze({
      serviceImages: 'enforced', serviceVolumes: 'enforced', resources: 'enforced', dependsOn: 'enforced', sync: 'enforced', ports: 'enforced', serviceAgents: 'enforced', oneOffRuns: 'enforced',
      restartAfterSync: 'unsupported',
    }),
    agentDelivery: Object.freeze(['image', 'download'] as const),
    namespaceOf,

    async resolveEndpoints(_workspace, services) {
      // Each service's Service object, reached by its name from the workspace's namespace.
      return Object.fromEntries(services.map((request) => [
        request.service,
        Object.fromEntries(request.ports.map((port) => [port, { host: names.service(request.service), port }])),
      ]));
    },

    start(plan, context) {
      return verb(plan.workspace.id, 'starting the workspace', async () => {
        starting.add(plan.workspace.id);
        try {
          await whileUnreachable(() => startWorkspace(plan, context), context, startTimeoutMs);
        } catch (error) {
          // Nothing half-started stays running: everything scales to zero, volumes stay (as on stop).
          await scaleDown(plan.workspace.id).catch(() => undefined);
          throw error;
        } finally {
          starting.delete(plan.workspace.id);
        }
      });
    },

    stop: (workspace, context) => verb(workspace.id, 'stopping the workspace', () => scaleDown(workspace.id, context)),

    delete: (workspace, context) => verb(workspace.id, 'deleting the workspace', () => removeNamespace(workspace.id, context)),

    async status(workspace): Promise<RuntimeStatus> {
      if (starting.has(workspace.id)) return { phase: 'starting' };
      const namespace = namespaceOf(workspace.id);
      try {
        const ns = await ignoreMissing(core.readNamespace({ name: namespace }));
        if (!ns || ns.metadata?.labels?.[LABEL_INSTANCE] !== instance) return { phase: 'absent' };
        const deployment = await ignoreMissing(apps.readNamespacedDeployment({ name: WORKSPACE_DEPLOYMENT, namespace }));
        if (!deployment || !deployment.spec?.replicas) return { phase: 'stopped' };
        const pods = await core.listNamespacedPod({ namespace, labelSelector: `${LABEL_KIND}=workspace` });
        const hash = podSpecHash(deployment);
        const pod = pods.items.find((p) => !p.metadata?.deletionTimestamp && p.metadata?.annotations?.[ANNOTATION_POD_SPEC] === hash);
        if (!pod) return { phase: 'starting' };
        const failure = podFailure(pod, WORKSPACE_CONTAINER);
        if (failure) return { phase: 'failed', message: `The workspace pod ${failure.sentence}` };
        const container = pod.status?.containerStatuses?.find((s) => s.name === WORKSPACE_CONTAINER);
        return { phase: container?.state?.running ? 'running' : 'starting' };
      } catch (error) {
        throw toAppError(error, 'reading the workspace\'s status');
      }
    },

    async serviceLogs(workspace, service, logOptions) {
      const namespace = namespaceOf(workspace.id);
      const pods = await ignoreMissing(core.listNamespacedPod({ namespace, labelSelector: `${selector(instance, workspace.id)},${LABEL_SERVICE}=${labelValue(service)}` }))
        .catch((error: unknown) => { throw toAppError(error, 'reading a service log'); });
      const pod = pods?.items.find((p) => !p.metadata?.deletionTimestamp && p.status?.containerStatuses?.some((s) => s.state?.running || s.state?.terminated));
      if (!pod) {
        throw new AppError('WORKSPACE_NOT_RUNNING',
          `Service ${service} of ${workspace.ownerName}/${workspace.name} has no running pod, so there is no log to show: the kubernetes runtime scales services to zero, and their logs go with their pods, when a workspace stops. Start it (den start ${workspace.ownerName}/${workspace.name}) and try again.`);
      }
      const name = pod.metadata!.name!;
      if (!logOptions.follow) {
        const text = await core.readNamespacedPodLog({ name, namespace, container: SERVICE_CONTAINER, timestamps: true, ...(logOptions.tail !== undefined ? { tailLines: logOptions.tail } : {}) })
          .catch((error: unknown) => { throw toAppError(error, 'reading a service log'); });
        const lines = splitLines(text).map(timedLine);
        return (async function* () { yield* lines; })();
      }
      return followLog(kc, namespace, name, logOptions);
    },

    async runOneOff(workspace, request) {
      const namespace = namespaceOf(workspace.id);
      try {
        return await runOneOffPod({ core, instance, namespace, followLog: (ns, pod, logOptions) => followLog(kc, ns, pod, logOptions) }, workspace, request);
      } catch (error) {
        throw toAppError(error, 'running a one-off pod');
      }
    },

    listWorkspaceIds: () => namespaceIds().catch((error: unknown) => { throw toAppError(error, 'listing den\'s namespaces'); }),

    async collectGarbage(exists) {
      const removed: string[] = [];
      for (const id of await namespaceIds()) {
        if (await exists(id)) continue;
        await verb(id, 'removing the namespace of a deleted workspace', () => removeNamespace(id));
        options.log.info({ workspaceId: id }, 'removed the namespace of a workspace that no longer exists');
        removed.push(id);
      }
      const expired = await deleteExpiredOneOffs(core, instance, Date.now());
      if (expired > 0) options.log.info({ count: expired }, 'deleted one-off pods left past their deadline');
      return removed;
    },

    observe(onEvent) {
      const ownVerb = (id: string) => locks.active(id) || Date.now() - locks.endedAt(id) < OWN_VERB_GRACE_MS;
      return watch.observe(ownVerb, onEvent);
    },

    async close() {
      agentKeeper.close();
      watch.close();
      await access.close();
    },
  };
  return driver;
}

/** Out of the cluster: a kubeconfig (a path, else KUBECONFIG or ~/.kube/config) and context; in it, the pod's service account. */
export function loadKubeConfig(path?: string, context?: string): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  if (context) {
    if (!kc.getContexts().some((c) => c.name === context)) {
      throw new Error(`The kubeconfig has no context named ${context}; it has ${kc.getContexts().map((c) => c.name).join(', ') || 'none'}.`);
    }
    kc.setCurrentContext(context);
  }
  if (!kc.getCurrentCluster()) {
    throw new Error('No Kubernetes cluster is configured: set DEN_KUBECONFIG (or KUBECONFIG) to a kubeconfig file, or run den in a pod with a service account.');
  }
  return kc;
}

/** Who may open connections into workspace pods besides their own namespace: the nodes (kubelet probes, a den on a node) and den's own namespace. */
async function denPeers(listNodes: () => Promise<{ status?: { addresses?: { type: string; address: string }[] } }[]>): Promise<V1NetworkPolicyPeer[]> {
  const peers: V1NetworkPolicyPeer[] = [];
  for (const node of await listNodes().catch(() => [])) {
    for (const address of node.status?.addresses ?? []) {
      if (address.type === 'InternalIP' && !address.address.includes(':')) peers.push({ ipBlock: { cidr: `${address.address}/32` } });
    }
  }
  let ownNamespace: string | undefined;
  try {
    ownNamespace = readFileSync(IN_CLUSTER_NAMESPACE_FILE, 'utf8').trim();
  } catch {
    // not in a pod
  }
  if (ownNamespace) peers.push({ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': ownNamespace } } });
  return peers;
}

interface PodFailure {
  sentence: string;
  container: string;
  /** whether its log says more */
  logs: boolean;
  /** the failed run is the one before the current (the kubelet restarted the container) */
  previous?: boolean;
}

/** Why a pod will not come up by itself, as a phrase completing "<what>: ...", or undefined. */
function podFailure(pod: V1Pod, container: string): PodFailure | undefined {
  for (const init of pod.status?.initContainerStatuses ?? []) {
    const terminated = init.state?.terminated ?? init.lastState?.terminated;
    if (terminated && terminated.exitCode !== 0) {
      const what = init.name === AGENT_DOWNLOAD_CONTAINER ? 'the agent download' : `init container ${init.name}`;
      return { sentence: `${what} failed with exit code ${terminated.exitCode}.`, container: init.name, logs: true, previous: !init.state?.terminated };
    }
    const waiting = init.state?.waiting;
    if (waiting?.reason && IMAGE_REASONS.has(waiting.reason)) {
      return { sentence: `Kubernetes cannot get image ${init.image} (${waiting.reason}: ${waiting.message ?? 'no message'}). Load the image onto the nodes or fix its name.`, container: init.name, logs: false };
    }
  }
  const status = pod.status?.containerStatuses?.find((s) => s.name === container);
  const waiting = status?.state?.waiting;
  if (waiting?.reason && IMAGE_REASONS.has(waiting.reason)) {
    return { sentence: `Kubernetes cannot get image ${status!.image} (${waiting.reason}: ${waiting.message ?? 'no message'}). Check the image name in the template, or load the image onto the nodes.`, container, logs: false };
  }
  // CreateContainerConfigError and CreateContainerError are often passing (the kubelet's secret
  // cache not synced yet under load): the kubelet retries them, so they fail a start only at its timeout.
  if (waiting?.reason === 'RunContainerError') {
    return { sentence: `its container could not be created (${waiting.reason}: ${waiting.message ?? 'no message'}).`, container, logs: false };
  }
  const terminated = status?.state?.terminated ?? (waiting?.reason === 'CrashLoopBackOff' ? status?.lastState?.terminated : undefined);
  if (terminated) {
    const cause = terminated.reason === 'OOMKilled' ? 'was killed for using more memory than its limit (OOMKilled)' : `exited with code ${terminated.exitCode}${terminated.reason ? ` (${terminated.reason})` : ''}`;
    return { sentence: `its container ${cause}.`, container, logs: true, previous: !status?.state?.terminated };
  }
  return undefined;
}

/** Only events about the pods (or their ReplicaSet) a wait is for. */
function relevant(event: CoreV1Event, wait: { labelSelector: string }): boolean {
  const involved = event.involvedObject?.name ?? '';
  const [, value] = wait.labelSelector.split('=');
  if (wait.labelSelector.startsWith(LABEL_KIND)) return involved.startsWith(`${WORKSPACE_DEPLOYMENT}-`);
  return involved.startsWith(`${names.serviceDeployment(value)}-`);
}

/** A Warning event as a sentence for the build log, naming the event that said it. */
function eventSentence(event: CoreV1Event, what: string): string {
  const reason = event.reason ?? 'Warning';
  const message = (event.message ?? '').trim().slice(0, 500);
  const where = `${event.involvedObject?.kind ?? 'object'} ${event.involvedObject?.name ?? ''}`.trim();
  const said = `(Kubernetes event ${reason} on ${where}: ${message})`;
  switch (reason) {
    case 'FailedScheduling': return `Kubernetes cannot find a node for ${what} yet ${said}.`;
    case 'Failed': case 'ErrImagePull': case 'ImagePullBackOff': return `Kubernetes could not start ${what} ${said}.`;
    case 'BackOff': return `${capitalize(what)} keeps exiting and Kubernetes is restarting it ${said}.`;
    case 'Unhealthy': return `${capitalize(what)} is failing its readiness check ${said}.`;
    case 'FailedCreate': return `Kubernetes refused to create a pod for ${what} ${said}.`;
    case 'FailedMount': case 'FailedAttachVolume': return `A volume of ${what} cannot be mounted yet ${said}.`;
    case 'OOMKilling': return `${capitalize(what)} was killed for using too much memory ${said}.`;
    default: return `Kubernetes warns about ${what} ${said}.`;
  }
}

/**
 * A container's log followed through the API server: lines until the container ends or the
 * signal aborts. A request of its own over node:https (client-node's Log drops tailLines 0, and
 * its stream throws out of reach when aborted).
 */
async function followLog(kc: KubeConfig, namespace: string, pod: string, options: { tail?: number; signal: AbortSignal }): Promise<AsyncIterable<{ stream: 'stdout'; line: string; at?: string }>> {
  const url = new URL(`${kc.getCurrentCluster()!.server}/api/v1/namespaces/${namespace}/pods/${pod}/log`);
  url.searchParams.set('container', SERVICE_CONTAINER);
  url.searchParams.set('follow', 'true');
  url.searchParams.set('timestamps', 'true');
  if (options.tail !== undefined) url.searchParams.set('tailLines', String(options.tail));
  const requestOptions: https.RequestOptions = { method: 'GET', headers: {} };
  await kc.applyToHTTPSOptions(requestOptions);
  let cancel = () => {};
  options.signal.addEventListener('abort', () => cancel(), { once: true });
  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    const request = (url.protocol === 'https:' ? https : http).request(url, requestOptions, resolve);
    request.once('error', reject);
    cancel = () => request.destroy();
    request.end();
  }).catch((error: unknown) => { throw toAppError(error, 'reading a service log'); });
  if (response.statusCode !== 200) {
    const chunks: Buffer[] = [];
    for await (const chunk of response) if (chunks.length < 16) chunks.push(chunk as Buffer);
    throw toAppError(new ApiException(response.statusCode ?? 500, 'log', Buffer.concat(chunks).toString('utf8'), {}), 'reading a service log');
  }
  cancel = () => response.destroy();
  return (async function* () {
    let pending = '';
    try {
      response.setEncoding('utf8');
      for await (const chunk of response) {
        const parts = (pending + (chunk as string)).split('\n');
        pending = parts.pop() ?? '';
        for (const line of parts) yield timedLine(line.replace(/\r$/, ''));
        // a service that never writes a newline is cut into lines, not buffered without end
        if (pending.length > MAX_LINE_CHARS) {
          yield timedLine(pending);
          pending = '';
        }
      }
      if (pending) yield timedLine(pending);
    } catch (error) {
      if (!options.signal.aborted) throw toAppError(error, 'reading a service log');
    } finally {
      response.destroy();
    }
  })();
}

/** How often a start whose API calls found the API server unreachable tries again. */
const UNREACHABLE_RETRY_MS = 2_000;

/**
 * Runs `work` (an idempotent start: server-side apply, the Secret made only when missing) again
 * while the API server does not answer, for up to `budgetMs` from the first failure, saying so
 * in the build log once per outage. Any other failure, or an outage longer than that, is thrown.
 */
async function whileUnreachable(work: () => Promise<void>, context: DriverContext, budgetMs: number): Promise<void> {
  let since: number | undefined;
  for (;;) {
    try {
      await work();
      if (since !== undefined) context.log(`The Kubernetes API answered again; the start finished ${Math.round((Date.now() - since) / 1000)} s after it first did not.`);
      return;
    } catch (error) {
      const unreachable = isUnreachable(error instanceof AppError ? error.cause : error);
      if (!unreachable || context.signal.aborted || (since !== undefined && Date.now() - since > budgetMs)) throw error;
      if (since === undefined) {
        since = Date.now();
        context.log(`The Kubernetes API did not answer (${apiMessage(error instanceof AppError ? error.cause : error)}); den tries again every ${UNREACHABLE_RETRY_MS / 1000} s for up to ${Math.round(budgetMs / 1000)} s.`);
      }
      await new Promise((resolve) => setTimeout(resolve, UNREACHABLE_RETRY_MS));
    }
  }
}

async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMs: number, everyMs = 200): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/** A log line read with `timestamps=true`: the kubelet's RFC 3339 time of the line, then the line as written. */
function timedLine(raw: string): { stream: 'stdout'; line: string; at?: string } {
  const stamp = KUBELET_TIMESTAMP.exec(raw);
  const at = stamp ? new Date(stamp[1]) : undefined;
  // a piece of an overlong line has no time of its own
  if (!stamp || !at || Number.isNaN(at.getTime())) return { stream: 'stdout', line: raw };
  return { stream: 'stdout', line: raw.slice(stamp[0].length), at: at.toISOString() };
}
const KUBELET_TIMESTAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) /;

/** Lines of a log (service containers have a terminal: \r\n line ends). */
function splitLines(text: string): string[] {
  const lines = text.split('\n').map((line) => line.replace(/\r$/, ''));
  if (lines.at(-1) === '') lines.pop();
  return lines;
}

function capitalize(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function statusOf(error: unknown): number | undefined {
  return error instanceof ApiException ? error.code : undefined;
}

/** undefined for a 404 (the object is not there), the error otherwise. */
async function ignoreMissing<T>(promise: Promise<T>): Promise<T | undefined> {
  try {
    return await promise;
  } catch (error) {
    if (statusOf(error) === 404) return undefined;
    throw error;
  }
}

function apiMessage(error: unknown): string {
  if (error instanceof ApiException) {
    const body = typeof error.body === 'string' ? safeJson(error.body) : error.body;
    return (body as { message?: string } | undefined)?.message ?? `HTTP ${error.code}`;
  }
  const cause = (error as { cause?: { code?: string } })?.cause?.code ?? (error as { code?: string })?.code;
  return cause ? `${(error as Error).message} (${cause})` : (error as Error)?.message ?? String(error);
}

function isUnreachable(error: unknown): boolean {
  const code = (error as { cause?: { code?: string } })?.cause?.code ?? (error as { code?: string })?.code;
  return typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|UND_ERR_\w+)$/.test(code);
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { message: text.slice(0, 300) };
  }
}

function toAppError(error: unknown, doing: string): AppError {
  if (error instanceof AppError) return error;
  const status = statusOf(error);
  if (status === 401 || status === 403) {
    return new AppError('RUNTIME_ERROR',
      `The Kubernetes API refused den while ${doing} (${apiMessage(error)}). Give den's service account the verbs docs/kubernetes.md lists, or check DEN_KUBECONFIG.`, { cause: error });
  }
  if (status === undefined && isUnreachable(error)) {
    return new AppError('RUNTIME_ERROR',
      `The Kubernetes API did not answer while ${doing} (${apiMessage(error)}). Check that the cluster is up and DEN_KUBECONFIG points at it; den finishes the work on the next start or delete.`, { cause: error });
  }
  return new AppError('RUNTIME_ERROR', `Kubernetes failed while ${doing}: ${apiMessage(error)}.`, { cause: error });
}
