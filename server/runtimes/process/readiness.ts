import { spawn } from 'node:child_process';
import { openSync, readSync, closeSync, statSync } from 'node:fs';
import type { ReadinessPlan } from '../driver.ts';
import { httpProbe, tcpProbe } from '../probes.ts';

export interface ReadinessTarget {
  readiness: ReadinessPlan | undefined;
  /** declared port -> assigned loopback port */
  ports: Record<string, number>;
  env: Record<string, string>;
  cwd: string;
  /** wraps a readiness command the way the service itself runs (the sandbox) */
  argvFor: (command: string[]) => string[];
  /**
   * Sandboxed workspaces have a network of their own: tcp and http probes run there, as a
   * command this wraps (into the workspace's namespaces). Without it they connect from den.
   */
  inNetwork?: (command: string[]) => string[];
  /** false as soon as the service process is gone: no point waiting for the timeout */
  alive: () => boolean;
  signal: AbortSignal;
}

export type ReadinessResult = { ok: true } | { ok: false; reason: string };

/** Polls the service's readiness check until it passes, the process exits, or the timeout ends. */
export async function waitUntilReady(target: ReadinessTarget): Promise<ReadinessResult> {
  const readiness = target.readiness;
  if (!readiness) return { ok: true };
  const deadline = Date.now() + readiness.timeoutMs;
  let lastFailure = 'the check has not passed yet';
  while (true) {
    if (target.signal.aborted) return { ok: false, reason: 'the build was canceled' };
    if (!target.alive()) return { ok: false, reason: 'the process exited before it became ready' };
    const failure = await checkOnce(readiness, target, Math.max(250, Math.min(readiness.intervalMs * 4, 5_000)));
    if (failure === null) return { ok: true };
    lastFailure = failure;
    if (Date.now() + readiness.intervalMs > deadline) {
      return { ok: false, reason: `it did not become ready within ${seconds(readiness.timeoutMs)} (${lastFailure})` };
    }
    await new Promise((resolve) => setTimeout(resolve, readiness.intervalMs));
  }
}

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

/** The last `count` lines of a log file, a partial last line included; none when it cannot be read. */
export function tailLines(file: string, count: number): string[] {
  try {
    const { buffer, cut } = readLastBytes(file, 64 * 1024);
    const lines = buffer.toString('utf8').split('\n');
    if (cut) lines.shift(); // cut in the middle of a line
    return lines.filter((line) => line.length > 0).slice(-count);
  } catch {
    return [];
  }
}

/** At most the last `max` bytes of a file, and whether they begin inside it (`cut`). */
function readLastBytes(file: string, max: number): { buffer: Buffer; size: number; cut: boolean } {
  const size = statSync(file).size;
  const length = Math.min(size, max);
  const buffer = Buffer.alloc(length);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, buffer, 0, length, size - length);
  } finally {
    closeSync(fd);
  }
  return { buffer, size, cut: length < size };
}

/**
 * The last `count` complete lines of a log file (within its last 256 KiB) and the offset just
 * after them, where following it goes on; a partial last line is left for the follower.
 */
export function readTail(file: string, count: number | undefined): { lines: string[]; offset: number } {
  const { buffer, size, cut } = readLastBytes(file, 256 * 1024);
  const length = buffer.length;
  const end = buffer.lastIndexOf(0x0a);
  if (end < 0) return { lines: [], offset: size - length };
  const lines = buffer.subarray(0, end).toString('utf8').split('\n');
  if (cut) lines.shift(); // cut in the middle of a line
  return { lines: count === undefined ? lines : lines.slice(Math.max(0, lines.length - count)), offset: size - length + end + 1 };
}

/** Reads what a log file gained since `offset`; returns the complete new lines and the new offset. */
export function readNewLines(file: string, offset: number): { lines: string[]; offset: number } {
  try {
    const size = statSync(file).size;
    // Smaller than where we were: den cut the file (log-files.ts). Go on from its new end; the
    // lines kept before it were shown already.
    if (size < offset) return { lines: [], offset: size };
    if (size === offset) return { lines: [], offset };
    const buffer = Buffer.alloc(Math.min(size - offset, 256 * 1024));
    const fd = openSync(file, 'r');
    try {
      readSync(fd, buffer, 0, buffer.length, offset);
    } finally {
      closeSync(fd);
    }
    const text = buffer.toString('utf8');
    const end = text.lastIndexOf('\n');
    if (end < 0) return { lines: [], offset };
    return { lines: text.slice(0, end).split('\n'), offset: offset + Buffer.byteLength(text.slice(0, end + 1)) };
  } catch {
    return { lines: [], offset };
  }
}

async function checkOnce(readiness: ReadinessPlan, target: ReadinessTarget, timeoutMs: number): Promise<string | null> {
  if (readiness.tcp !== undefined) {
    const port = target.ports[String(readiness.tcp)] ?? readiness.tcp;
    if (target.inNetwork) return probeInNetwork(target.inNetwork, TCP_PROBE, [String(port)], timeoutMs, (_, code) => code === 0 ? null : `port ${port} did not accept a connection`);
    return tcpProbe('127.0.0.1', port, timeoutMs);
  }
  if (readiness.http) {
    const port = target.ports[String(readiness.http.port)] ?? readiness.http.port;
    const path = `${readiness.http.path.startsWith('/') ? '' : '/'}${readiness.http.path}`;
    if (target.inNetwork) {
      return probeInNetwork(target.inNetwork, HTTP_PROBE, [String(port), path], timeoutMs, (status) =>
        status === '' ? `GET ${path} failed: no answer on port ${port}` : Number(status) < 400 ? null : `GET ${path} answered ${status}`);
    }
    return httpProbe(`http://127.0.0.1:${port}${path}`, timeoutMs);
  }
  if (readiness.command) return commandCheck(readiness.command, target, timeoutMs);
  return null;
}

/**
 * Probes run by the host's bash inside the workspace's network (a few ms, where a Node probe
 * costs tens): /dev/tcp connects; the HTTP probe prints the status code of a GET (empty when
 * nothing answered). Arguments come as $1, $2, never spliced into the script.
 */
const TCP_PROBE = 'exec 3<>/dev/tcp/127.0.0.1/$1';
const HTTP_PROBE = 'exec 3<>/dev/tcp/127.0.0.1/$1 || exit 0; printf \'GET %s HTTP/1.0\\r\\nHost: 127.0.0.1:%s\\r\\nConnection: close\\r\\n\\r\\n\' "$2" "$1" >&3; read -r _ status _ <&3; printf %s "$status"';

/** Runs a probe script in the workspace's network; `verdict` turns its output and exit code into null (passed) or a reason. */
function probeInNetwork(
  inNetwork: (command: string[]) => string[], script: string, args: string[], timeoutMs: number,
  verdict: (stdout: string, code: number | null) => string | null,
): Promise<string | null> {
  return new Promise((resolve) => {
    const argv = inNetwork(['/bin/bash', '-c', script, 'probe', ...args]);
    const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'ignore'], timeout: timeoutMs });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk; });
    child.once('error', (error) => resolve(`the probe could not run: ${error.message}`));
    child.once('close', (code) => resolve(verdict(stdout.trim(), code)));
  });
}


function commandCheck(command: string[], target: ReadinessTarget, timeoutMs: number): Promise<string | null> {
  return new Promise((resolve) => {
    const argv = target.argvFor(command);
    const child = spawn(argv[0], argv.slice(1), { cwd: target.cwd, env: target.env, stdio: 'ignore', timeout: timeoutMs });
    child.once('error', (error) => resolve(`\`${command.join(' ')}\` could not run: ${error.message}`));
    child.once('exit', (code, signal) =>
      resolve(code === 0 ? null : `\`${command.join(' ')}\` exited with ${signal ?? code}`));
  });
}
