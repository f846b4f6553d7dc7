import type { V1Container, V1Node, V1Pod } from '@kubernetes/client-node';

/**
 * What a pod requests that no node has even when empty (its allocatable), as a phrase such as
 * "512 GiB of memory (the largest node has 23.4 GiB)", or undefined when some node could hold it.
 */
export function beyondEveryNode(pod: V1Pod, nodes: V1Node[]): string | undefined {
  if (nodes.length === 0) return undefined;
  const spec = pod.spec;
  const phrases: string[] = [];
  for (const resource of ['cpu', 'memory'] as const) {
    const request = (containers: V1Container[] | undefined) => (containers ?? []).map((c) => quantity(c.resources?.requests?.[resource]));
    const need = Math.max(request(spec?.containers).reduce((a, b) => a + b, 0), ...request(spec?.initContainers));
    const largest = Math.max(...nodes.map((node) => quantity(node.status?.allocatable?.[resource])));
    if (need > largest) {
      const show = resource === 'cpu' ? (n: number) => `${Number(n.toFixed(3))} CPU` : (n: number) => `${Number((n / 1024 ** 3).toFixed(1))} GiB of memory`;
      phrases.push(`${show(need)} (the largest node has ${show(largest)})`);
    }
  }
  return phrases.length > 0 ? phrases.join(' and ') : undefined;
}

const QUANTITY_SUFFIXES: Record<string, number> = {
  '': 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** A Kubernetes quantity ("500m", "24581372Ki", "2", "1e3") as a number; 0 when absent or unreadable. */
export function quantity(value: string | undefined): number {
  const match = /^([0-9.]+(?:[eE][-+]?[0-9]+)?)([a-zA-Z]*)$/.exec(value?.trim() ?? '');
  const scale = match ? QUANTITY_SUFFIXES[match[2]] : undefined;
  return match && scale !== undefined ? Number(match[1]) * scale : 0;
}
