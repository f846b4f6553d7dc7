/**
 * Helpers for tests that need the real test Kubernetes (`npm run cluster:up`).
 *
 * Tests read KUBECONFIG. Without it they skip with `kubeSkipReason` printed; in CI (CI=true)
 * a missing KUBECONFIG is a failure, not a skip: use `describeKube` / `kubeMissingInCI`.
 */
import { execFile } from 'node:child_process';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Exec, KubeConfig, PortForward } from '@kubernetes/client-node';

export const kubeconfigPath = process.env.KUBECONFIG || undefined;

export const kubeSkipReason = kubeconfigPath
  ? undefined
  : 'KUBECONFIG is not set; start the test cluster with `export KUBECONFIG=$(npm run -s cluster:up | tail -1)` to run the Kubernetes tests.';

/** True in CI when the cluster is missing: Kubernetes tests must then fail instead of skipping. */
export const kubeMissingInCI = !kubeconfigPath && !!process.env.CI;

/** The busybox image that `up.sh` builds locally (no registry) and imports into the cluster. */
export const testImage = process.env.DEN_K8S_TEST_IMAGE ?? 'den.local/busybox:1.35';

const here = dirname(fileURLToPath(import.meta.url));

export function loadKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  return kc;
}

/** Polls `fn` until it returns a value other than undefined/false, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 60_000, everyMs = 250): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  /** "Success" or "Failure", from the API server's status message */
  status: string;
  message?: string;
}

/** Runs a command in a container through the API server (the `exec` subresource). */
export async function execInPod(kc: KubeConfig, namespace: string, pod: string, container: string, command: string[]): Promise<ExecResult> {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = '';
  let stderr = '';
  out.on('data', (d: Buffer) => (stdout += d.toString()));
  err.on('data', (d: Buffer) => (stderr += d.toString()));
  let status = 'Unknown';
  let message: string | undefined;
  const ws = await new Exec(kc).exec(namespace, pod, container, command, out, err, null, false, (s) => {
    status = s.status ?? 'Unknown';
    message = s.message;
  });
  await new Promise<void>((resolve) => {
    if (ws.readyState === ws.CLOSED) resolve();
    else ws.on('close', () => resolve());
  });
  await new Promise((r) => setImmediate(r));
  return { stdout, stderr, status, message };
}

/**
 * Forwards a local port on 127.0.0.1 to `port` of a pod through the API server (the
 * `portforward` subresource, like `kubectl port-forward`). Close it when done.
 */
export async function forwardPort(kc: KubeConfig, namespace: string, pod: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const forward = new PortForward(kc);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    forward.portForward(namespace, pod, [port], socket, null, socket).catch((e: unknown) => socket.destroy(e as Error));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Imports locally built Docker images (or a tarball with `--tar`) into the cluster's containerd. */
export function importImages(...args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('bash', [join(here, 'import-image.sh'), ...args], (error, _stdout, stderr) =>
      error ? reject(new Error(`import-image.sh ${args.join(' ')} failed: ${stderr}`)) : resolve(),
    );
  });
}

/** Imports those of `images` (local Docker images) that the cluster's containerd does not have yet. */
export async function ensureImagesInCluster(...images: string[]): Promise<void> {
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile('bash', [join(here, 'import-image.sh'), '--list'], (error, out, stderr) =>
      error ? reject(new Error(`import-image.sh --list failed: ${stderr}`)) : resolve(out));
  });
  const present = new Set(stdout.split('\n').map((line) => line.trim()));
  const missing = images.filter((image) => !present.has(`docker.io/${image}`) && !present.has(image));
  if (missing.length > 0) await importImages(...missing);
}
