import type { V1Node, V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { beyondEveryNode, quantity } from './capacity.ts';

describe('Kubernetes quantities and node capacity', () => {
  it('reads the quantity forms the API server writes', () => {
    expect(quantity('2')).toBe(2);
    expect(quantity('500m')).toBe(0.5);
    expect(quantity('24581372Ki')).toBe(24581372 * 1024);
    expect(quantity('268435456')).toBe(268435456);
    expect(quantity('4Gi')).toBe(4 * 1024 ** 3);
    expect(quantity('1E')).toBe(1e18);
    expect(quantity('1e3')).toBe(1000);
    expect(quantity('1.5')).toBe(1.5);
    expect(quantity(undefined)).toBe(0);
    expect(quantity('lots')).toBe(0);
  });

  const node = (cpu: string, memory: string): V1Node => ({ status: { allocatable: { cpu, memory } } });
  const pod = (requests: Record<string, string>[], init: Record<string, string>[] = []): V1Pod => ({
    spec: {
      containers: requests.map((r, i) => ({ name: `c${i}`, resources: { requests: r } })),
      initContainers: init.map((r, i) => ({ name: `i${i}`, resources: { requests: r } })),
    },
  });

  it('names what a pod asks for beyond the largest node, and nothing when one node could hold it', () => {
    const nodes = [node('2', '24581372Ki'), node('4', '8Gi')];
    expect(beyondEveryNode(pod([{ memory: String(512 * 1024 ** 3) }]), nodes)).toBe('512 GiB of memory (the largest node has 23.4 GiB of memory)');
    expect(beyondEveryNode(pod([{ cpu: '3' }, { cpu: '2' }]), nodes)).toBe('5 CPU (the largest node has 4 CPU)');
    expect(beyondEveryNode(pod([{ cpu: '3', memory: '8Gi' }]), nodes)).toBeUndefined();
    // init containers run one at a time, before the others: the largest of them counts
    expect(beyondEveryNode(pod([{ cpu: '1' }], [{ cpu: '6' }]), nodes)).toBe('6 CPU (the largest node has 4 CPU)');
    expect(beyondEveryNode(pod([{ cpu: '100' }]), [])).toBeUndefined();
  });
});
