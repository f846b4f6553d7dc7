import { PassThrough, type Readable } from 'node:stream';
import type { ReadinessPlan } from '../driver.ts';
import type { ContainerApi, ContainerInfo, DockerApi } from './docker-api.ts';
import { httpProbe, tcpProbe } from '../probes.ts';

export type ReadinessResult = { ok: true } | { ok: false; reason: string };

/**
 * Polls a service container's readiness check until it passes, the container exits, or the
 * timeout ends. TCP and HTTP checks connect from the den host to the container's address on the
 * workspace network (the host has an address on every bridge network, and needs no tool in the
 * image); command checks run inside the container with `docker exec`.
 */
export async function waitUntilReady(options: {
  container: ContainerApi;
  network: string;
  readiness: ReadinessPlan | undefined;
  signal: AbortSignal;
}): Promise<ReadinessResult> {
  const { container, readiness, signal } = options;
  const deadline = Date.now() + (readiness?.timeoutMs ?? 0);
  let lastFailure = 'the check has not passed yet';
  while (true) {
    if (signal.aborted) return { ok: false, reason: 'the build was canceled' };
    const info = await container.inspect();
    if (!info.State.Running) return { ok: false, reason: exitSentence(info) };
    if (!readiness) return { ok: true };
    const address = info.NetworkSettings.Networks?.[options.network]?.IPAddress;
    const checkTimeout = Math.max(250, Math.min(readiness.intervalMs * 4, 5_000));
    const failure = address
      ? await checkOnce(readiness, address, container, checkTimeout)
      : `the container has no address on network ${options.network}`;
    if (failure === null) return { ok: true };
    lastFailure = failure;
    if (Date.now() + readiness.intervalMs > deadline) {
      return { ok: false, reason: `it did not become ready within ${Math.round(readiness.timeoutMs / 1000)} s (${lastFailure})` };
    }
    await new Promise((resolve) => setTimeout(resolve, readiness.intervalMs));
  }
}

/** One sentence for a container that is not running: OOM kill, exit code, or engine error. */
export function exitSentence(info: ContainerInfo): string {
  if (info.State.OOMKilled) return 'it was killed because it ran out of memory; raise its memory limit in the template';
  if (info.State.Error) return `the engine could not run it: ${info.State.Error}`;
  if (info.State.Status === 'created') return 'it was created but did not start';
  return `it exited with code ${info.State.ExitCode}`;
}

/**
 * Streams a container's output into `onLine` until stop() (or the container ends). Lines keep
 * their stream; a partial last line is flushed on stop.
 */
export async function followLogs(
  docker: DockerApi,
  container: ContainerApi,
  onLine: (line: string, stream: 'stdout' | 'stderr') => void,
  options: { tail?: number; timestamps?: boolean } = {},
): Promise<{ stop(): void; ended: Promise<void> }> {
  const raw = await container.logs({
    follow: true, stdout: true, stderr: true, ...(options.tail !== undefined ? { tail: options.tail } : {}), ...(options.timestamps ? { timestamps: true } : {}),
  });
  const stdout = lineSplitter((line) => onLine(line, 'stdout'));
  const stderr = lineSplitter((line) => onLine(line, 'stderr'));
  docker.modem.demuxStream(raw, stdout.input, stderr.input);
  const ended = new Promise<void>((resolve) => {
    raw.once('end', resolve);
    raw.once('close', resolve);
    raw.once('error', () => resolve());
  }).then(() => { stdout.flush(); stderr.flush(); });
  return {
    stop() {
      raw.destroy();
      stdout.flush();
      stderr.flush();
    },
    ended,
  };
}

/** The last `count` lines a container wrote (stdout and stderr interleaved as framed). */
export async function tailLogs(container: ContainerApi, count: number): Promise<string[]> {
  try {
    const buffer = await container.logs({ follow: false, stdout: true, stderr: true, tail: count });
    return demuxBuffer(Buffer.isBuffer(buffer) ? buffer : Buffer.from(buffer as unknown as string))
      .split('\n').filter((line) => line.length > 0).slice(-count);
  } catch {
    return [];
  }
}

/** Docker's log framing without a TTY: 8-byte header (stream, 0, 0, 0, size u32 BE) + payload. */
export function demuxBuffer(buffer: Buffer): string {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= buffer.length) {
    const kind = buffer[offset];
    const size = buffer.readUInt32BE(offset + 4);
    if (kind > 2 || buffer[offset + 1] !== 0) return buffer.toString('utf8'); // not framed
    parts.push(buffer.subarray(offset + 8, offset + 8 + size));
    offset += 8 + size;
  }
  return Buffer.concat(parts).toString('utf8');
}

async function checkOnce(readiness: ReadinessPlan, address: string, container: ContainerApi, timeoutMs: number): Promise<string | null> {
  if (readiness.tcp !== undefined) return tcpProbe(address, readiness.tcp, timeoutMs);
  if (readiness.http) {
    const path = readiness.http.path.startsWith('/') ? readiness.http.path : `/${readiness.http.path}`;
    return httpProbe(`http://${address}:${readiness.http.port}${path}`, timeoutMs);
  }
  if (readiness.command) return commandCheck(container, readiness.command);
  return null;
}


async function commandCheck(container: ContainerApi, command: string[]): Promise<string | null> {
  try {
    const exec = await container.exec({ Cmd: command, AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({ hijack: true, stdin: false });
    await drain(stream);
    const { ExitCode } = await exec.inspect();
    return ExitCode === 0 ? null : `\`${command.join(' ')}\` exited with code ${ExitCode}`;
  } catch (error) {
    return `\`${command.join(' ')}\` could not run: ${(error as Error).message}`;
  }
}

function drain(stream: Readable): Promise<void> {
  return new Promise((resolve) => {
    stream.on('data', () => undefined);
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', () => resolve());
  });
}

function lineSplitter(onLine: (line: string) => void): { input: PassThrough; flush(): void } {
  const input = new PassThrough();
  let pending = '';
  input.on('data', (chunk: Buffer) => {
    const text = pending + chunk.toString('utf8');
    const lines = text.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) onLine(line.replace(/\r$/, ''));
  });
  return {
    input,
    flush() {
      if (pending) onLine(pending);
      pending = '';
    },
  };
}
