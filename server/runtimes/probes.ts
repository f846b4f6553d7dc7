import { connect } from 'node:net';

/**
 * Readiness probes shared by the runtimes. Each resolves with null when the check passes, or
 * with a short phrase saying why it did not (the caller puts it in a sentence in the build log).
 */
export function tcpProbe(host: string, port: number, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const timer = setTimeout(() => finish(`port ${port} did not accept a connection`), timeoutMs);
    function finish(result: string | null) {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    }
    socket.once('connect', () => finish(null));
    socket.once('error', (error) => finish(`port ${port}: ${(error as NodeJS.ErrnoException).code ?? error.message}`));
  });
}

/** Any answer below 400 passes; redirects are not followed (a login redirect means "up"). */
export async function httpProbe(url: string, timeoutMs: number): Promise<string | null> {
  const path = new URL(url).pathname;
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'manual' });
    await response.body?.cancel();
    return response.status < 400 ? null : `GET ${path} answered ${response.status}`;
  } catch (error) {
    const cause = (error as { cause?: { code?: string } }).cause?.code;
    return `GET ${path} failed: ${cause ?? (error as Error).message}`;
  }
}
