// A worker thread of bench/templates.ts: asks /healthz one request at a time, on its own event
// loop so the pushes the main thread sends do not delay the measurement, until told to stop;
// then posts the latencies (ms).
import { parentPort, workerData } from 'node:worker_threads';

const { url, intervalMs } = workerData as { url: string; intervalMs: number };
let stopping = false;
parentPort!.once('message', () => { stopping = true; });
const latencies: number[] = [];
while (!stopping) {
  const started = performance.now();
  const response = await fetch(`${url}/healthz`);
  await response.text();
  latencies.push(performance.now() - started);
  await new Promise((r) => setTimeout(r, intervalMs));
}
parentPort!.postMessage(latencies);
