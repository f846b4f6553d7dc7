import { CoreV1Api, makeInformer, Watch, type CoreV1Event, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import type { RuntimeEvent } from '../driver.ts';
import { LABEL_KIND, LABEL_SERVICE, LABEL_WORKSPACE, selector } from './objects.ts';

/** Wait before watching again after a watch ended (an API server restart, a network fault). */
const REWATCH_MS = 1_000;
/** Warnings kept per namespace for the build log and failure sentences. */
const EVENTS_KEPT = 50;

/**
 * One watch over den's pods (label selector, across every namespace) and one over the cluster's
 * Warning events (filtered to den's namespaces), shared by all workspaces: a start waits on this
 * cache instead of polling, and observe() turns what happens to running workspaces into
 * RuntimeEvents. Both watches restart by themselves when the API server drops them.
 */
export interface ClusterWatch {
  /** resolves when the pod cache holds the cluster's state */
  ready: Promise<void>;
  pods(namespace: string): readonly V1Pod[];
  /** Warning events of a namespace, oldest first */
  warnings(namespace: string): CoreV1Event[];
  /** calls back on any pod or Warning event change in the namespace, until the returned function is called */
  onChange(namespace: string, callback: (change: { pod?: V1Pod; event?: CoreV1Event }) => void): () => void;
  observe(ownVerb: (workspaceId: string) => boolean, onEvent: (event: RuntimeEvent) => void): () => void;
  /** drops what is kept for a namespace that is gone */
  forget(namespace: string): void;
  close(): void;
}

export function createClusterWatch(kc: KubeConfig, instance: string, isOurs: (namespace: string) => boolean, log: { warn(message: string): void }): ClusterWatch {
  const core = kc.makeApiClient(CoreV1Api);
  const labelSelector = selector(instance);
  const informer = makeInformer<V1Pod>(kc, '/api/v1/pods', () => core.listPodForAllNamespaces({ labelSelector }), labelSelector);
  const listeners = new Map<string, Set<(change: { pod?: V1Pod; event?: CoreV1Event }) => void>>();
  const observers = new Set<(pod: V1Pod, deleted: boolean) => void>();
  const warnings = new Map<string, CoreV1Event[]>();
  let closed = false;
  let eventWatch: AbortController | undefined;
  let retry: NodeJS.Timeout | undefined;

  const notify = (namespace: string, change: { pod?: V1Pod; event?: CoreV1Event }) => {
    for (const callback of listeners.get(namespace) ?? []) callback(change);
  };
  const onPod = (deleted: boolean) => (pod: V1Pod) => {
    const namespace = pod.metadata?.namespace ?? '';
    notify(namespace, { pod });
    for (const observer of observers) observer(pod, deleted);
  };
  informer.on('add', onPod(false));
  informer.on('update', onPod(false));
  informer.on('delete', onPod(true));
  informer.on('error', (error: unknown) => {
    if (closed) return;
    log.warn(`The watch on den's pods ended (${(error as Error)?.message ?? String(error)}); watching again.`);
    setTimeout(() => { if (!closed) informer.start().catch(() => undefined); }, REWATCH_MS);
  });

  const watchEvents = async (): Promise<void> => {
    if (closed) return;
    try {
      // Only the list's resourceVersion is needed: older warnings are not news.
      const list = await core.listEventForAllNamespaces({ fieldSelector: 'type=Warning', limit: 1 });
      eventWatch = await new Watch(kc).watch('/api/v1/events', { fieldSelector: 'type=Warning', resourceVersion: list.metadata?.resourceVersion, allowWatchBookmarks: true },
        (phase, event: CoreV1Event) => {
          const namespace = event.metadata?.namespace ?? '';
          if ((phase !== 'ADDED' && phase !== 'MODIFIED') || !isOurs(namespace)) return;
          const kept = warnings.get(namespace) ?? [];
          kept.push(event);
          if (kept.length > EVENTS_KEPT) kept.shift();
          warnings.set(namespace, kept);
          notify(namespace, { event });
        },
        () => { if (!closed) retry = setTimeout(() => void watchEvents(), REWATCH_MS); });
    } catch {
      if (!closed) retry = setTimeout(() => void watchEvents(), REWATCH_MS);
    }
  };
  void watchEvents();
  const ready = informer.start();
  ready.catch(() => undefined);

  return {
    ready,
    pods: (namespace) => informer.list(namespace),
    warnings: (namespace) => [...(warnings.get(namespace) ?? [])],
    onChange(namespace, callback) {
      let set = listeners.get(namespace);
      if (!set) listeners.set(namespace, (set = new Set()));
      set.add(callback);
      return () => {
        set.delete(callback);
        if (set.size === 0) {
          listeners.delete(namespace);
          warnings.delete(namespace);
        }
      };
    },
    observe(ownVerb, onEvent) {
      const seen = new Set<string>();
      let seeded = false;
      // What pods went through before den started watching is not news: only changes after that are reported.
      void ready.then(() => {
        for (const pod of informer.list()) for (const event of podEvents(pod, false)) seen.add(event.detail.key as string);
        seeded = true;
      }, () => undefined);
      const observer = (pod: V1Pod, deleted: boolean) => {
        if (!seeded) return;
        for (const event of podEvents(pod, deleted)) {
          if (ownVerb(event.workspaceId) || seen.has(event.detail.key as string)) continue;
          seen.add(event.detail.key as string);
          if (seen.size > 10_000) seen.clear(); // bounded: a key seen again after this is reported twice at worst
          onEvent(event);
        }
      };
      observers.add(observer);
      return () => observers.delete(observer);
    },
    forget(namespace) {
      warnings.delete(namespace);
    },
    close() {
      closed = true;
      clearTimeout(retry);
      eventWatch?.abort();
      void informer.stop().catch(() => undefined);
    },
  };
}

/** What a pod's state says happened to its containers, as RuntimeEvents each with a key that makes it reported once. */
export function podEvents(pod: V1Pod, deleted: boolean): RuntimeEvent[] {
  const labels = pod.metadata?.labels ?? {};
  const workspaceId = labels[LABEL_WORKSPACE];
  // a task's or test's one-off pod ends by design; its run records how (environments/runs.ts)
  if (!workspaceId || labels[LABEL_KIND] === 'one-off') return [];
  const subject: RuntimeEvent['subject'] = labels[LABEL_KIND] === 'service' ? { type: 'service', name: labels[LABEL_SERVICE] } : { type: 'workspace' };
  const uid = pod.metadata?.uid ?? '';
  const at = new Date();
  const events: RuntimeEvent[] = [];
  // A deleted pod is not news: its Deployment makes another (den's own scale-downs are verbs).
  if (deleted) return events;
  for (const status of pod.status?.containerStatuses ?? []) {
    const terminated = status.state?.terminated ?? status.lastState?.terminated;
    const base = { pod: pod.metadata?.name, container: status.name };
    if (terminated) {
      const key = `${uid}/${status.name}/${terminated.finishedAt ? new Date(terminated.finishedAt).getTime() : status.restartCount}`;
      if (terminated.reason === 'OOMKilled') {
        events.push({ workspaceId, kind: 'oom_killed', subject, cause: '', at, detail: { ...base, key: `${key}/oom`, exitCode: terminated.exitCode } });
      } else {
        const code = terminated.exitCode;
        const cause = code > 128 ? `(killed by signal ${code - 128})` : `with exit code ${code}`;
        events.push({ workspaceId, kind: 'exited', subject, cause, at, detail: { ...base, key, exitCode: code, signal: code > 128 ? String(code - 128) : null } });
      }
    }
    const waiting = status.state?.waiting?.reason;
    if (waiting && IMAGE_REASONS.has(waiting)) {
      events.push({ workspaceId, kind: 'image_missing', subject, cause: status.state?.waiting?.message ?? waiting, at, detail: { ...base, key: `${uid}/${status.name}/image` } });
    }
    if (subject.type === 'service' && status.state?.running && !status.ready && pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'False' && status.started)) {
      events.push({ workspaceId, kind: 'probe_failing', subject, cause: '', at, detail: { ...base, key: `${uid}/${status.name}/probe/${status.restartCount}` } });
    }
  }
  return events;
}

export const IMAGE_REASONS = new Set(['ErrImagePull', 'ImagePullBackOff', 'ErrImageNeverPull', 'InvalidImageName']);
