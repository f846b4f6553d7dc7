import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { YOUNG_COLLECTION_BYTES } from './heap.ts';

const GIB = 1024 * 1024 * 1024;

const heapModule = resolve(import.meta.dirname, 'heap.ts');

/**
 * Relays 1 GiB through fresh 64 KiB Buffers the way a link does (each one read, handed on, dropped,
 * and counted by noteRelayed) in a child process, with young collections enabled or not, and
 * counts V8's collections by kind. A child, because enabling is process-wide.
 */
function relayInChild(enable: boolean): { major: number; minor: number } {
  const script = `
    import { PerformanceObserver, constants } from 'node:perf_hooks';
    import { collectRelayedGarbageYoung, noteRelayed } from ${JSON.stringify(heapModule)};
    if (${enable}) collectRelayedGarbageYoung();
    // a server-sized heap of live objects, as den's is while it relays
    const live = Array.from({ length: 200000 }, (_, i) => ({ i, name: 'object ' + i }));
    const counts = { major: 0, minor: 0 };
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        if (entry.detail.kind === constants.NODE_PERFORMANCE_GC_MAJOR) counts.major++;
        if (entry.detail.kind === constants.NODE_PERFORMANCE_GC_MINOR) counts.minor++;
      }
    }).observe({ entryTypes: ['gc'] });
    let relayed = 0;
    const batch = () => {
      for (let i = 0; i < 16; i++) {
        const read = Buffer.allocUnsafe(64 * 1024);
        read[0] = i;
        relayed += read.byteLength;
        noteRelayed(read.byteLength);
      }
      if (relayed < ${GIB}) return setImmediate(batch);
      // the observer reports on a later turn
      setTimeout(() => console.log(JSON.stringify({ ...counts, live: live.length })), 100);
    };
    batch();
  `;
  const output = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  return JSON.parse(output.trim().split('\n').pop()!);
}

describe('collectRelayedGarbageYoung', () => {
  it('frees relayed Buffers with young collections instead of full ones', () => {
    const defaults = relayInChild(false);
    const enabled = relayInChild(true);
    // V8's own schedule: a full collection of the whole heap for about every 64-100 MB of Buffers, no young one
    expect(defaults.major).toBeGreaterThanOrEqual(6);
    // enabled: a young collection per YOUNG_COLLECTION_BYTES relayed, and (almost) no full one
    expect(enabled.minor).toBeGreaterThanOrEqual(Math.floor(GIB / YOUNG_COLLECTION_BYTES) - 8);
    expect(enabled.major).toBeLessThanOrEqual(2);
  });
});
