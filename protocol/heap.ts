import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Bytes relayed between two collections of the young generation. Measured (ADR 0035's table):
 * with 16 MiB, V8 stayed in its old regime (a full collection every ~9 MB relayed) in some runs;
 * with 4 MiB and the flag below, in none. The cliff lies between 16 and 8 MiB; 4 keeps a margin.
 */
export const YOUNG_COLLECTION_BYTES = 4 * 1024 * 1024;

let enabled = false;
let collectYoung: (() => void) | undefined;
let relayedSinceCollection = 0;
let relayedTotal = 0;

/** The V8 majors the global-limit flag was measured on (Node 24 ships 13.6); on another, den does not pass a flag that may be gone. */
const MEASURED_V8_MAJORS = [13, 14];

/**
 * Makes relaying cost CPU on the bytes rather than on collecting garbage. Every byte den relays
 * (an SSH session's output, an app's download, a sync) passes through a few short-lived Buffers:
 * the socket's read, `ws`'s frame, ssh2's packet. Their memory lies outside V8's heap and their
 * handles are too small to fill the young generation, so nothing collected them young: V8 kept
 * starting full collections of the whole heap (30+ MB in the server) instead, one every few MB
 * relayed at 100+ MB/s, over half of the server's CPU during a `cat` over SSH. Two changes,
 * measured together (docs/adr/0035-young-collections-for-relayed-buffers.md):
 * - `noteRelayed` collects the young generation every YOUNG_COLLECTION_BYTES relayed, which
 *   frees those Buffers in about a millisecond;
 * - V8 counts Buffer memory in its global heap limit (the flag Chrome runs as a field trial), so
 *   the Buffers a young collection promotes (those still queued on a socket) start a full
 *   collection only by the heap's real growth. Without it, one run in six still fell into a full
 *   collection every ~10 MB.
 *
 * Process-wide: called once by each entry point that relays bytes (server/main.ts, cli/main.ts,
 * agent/main.ts) and by the benchmarks that run den in their own process. Until then
 * `noteRelayed` does nothing, so tests and embedders keep V8's own schedule.
 */
export function collectRelayedGarbageYoung(v8Version = process.versions.v8): void {
  if (enabled) return;
  enabled = true;
  if (MEASURED_V8_MAJORS.includes(Number(v8Version.split('.')[0]))) setFlagsFromString('--external-memory-accounted-in-global-limit');
}

/** Counts bytes this process relayed (read from or written to a link or tunnel); collects the young generation every YOUNG_COLLECTION_BYTES once enabled. */
export function noteRelayed(bytes: number): void {
  relayedTotal += bytes;
  if (!enabled) return;
  relayedSinceCollection += bytes;
  if (relayedSinceCollection < YOUNG_COLLECTION_BYTES) return;
  relayedSinceCollection = 0;
  (collectYoung ??= youngCollector())();
}

/** Bytes this process has counted with noteRelayed, enabled or not. */
export function relayedBytes(): number {
  return relayedTotal;
}

/** The collector, reached the way Node documents for after start-up: contexts created once the flag is set get `gc`. Made on first use, so a short CLI command does not pay for the context. */
function youngCollector(): () => void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as (options: { type: 'minor' }) => void;
  return () => gc({ type: 'minor' });
}
