import { PassThrough } from 'node:stream';
import type { ServiceLogLine, ServiceLogOptions } from '../driver.ts';
import type { ContainerApi, DockerApi } from './docker-api.ts';
import { followLogs } from './readiness.ts';

/**
 * A service container's log through the engine (`docker logs [--tail N] [-f]`): the tail, then
 * with `follow` live lines until the container ends or the signal aborts. Lines keep their stream.
 */
export async function containerLogLines(docker: DockerApi, container: ContainerApi, options: ServiceLogOptions): Promise<AsyncIterable<ServiceLogLine>> {
  if (!options.follow) {
    const buffer = await container.logs({ follow: false, stdout: true, stderr: true, timestamps: true, ...(options.tail !== undefined ? { tail: options.tail } : {}) });
    const lines = framedLines(Buffer.isBuffer(buffer) ? buffer : Buffer.from(buffer as unknown as string)).map(({ stream, line }) => stamped(stream, line));
    return (async function* () { yield* lines; })();
  }
  // Attached now, not at the first line asked for, so nothing logged in between is missed.
  // The engine pushes lines; the queue turns them into an iteration the caller paces.
  const queue = new PassThrough({ objectMode: true });
  const logs = await followLogs(docker, container, (line, stream) => {
    if (!queue.writableEnded) queue.write(stamped(stream, line));
  }, { tail: options.tail, timestamps: true });
  const abort = () => logs.stop();
  options.signal.addEventListener('abort', abort, { once: true });
  void logs.ended.then(() => queue.end());
  return (async function* () {
    try {
      for await (const item of queue) yield item as ServiceLogLine;
    } finally {
      options.signal.removeEventListener('abort', abort);
      logs.stop();
    }
  })();
}

/** Asked with timestamps, the engine starts each line with its RFC 3339 time and a space: moved to `at`. */
function stamped(stream: ServiceLogLine['stream'], text: string): ServiceLogLine {
  const match = /^(\d{4}-\d\d-\d\dT[\d:.]+Z) /.exec(text);
  if (!match) return { stream, line: text };
  const at = new Date(match[1]);
  return { stream, line: text.slice(match[0].length), ...(Number.isNaN(at.getTime()) ? {} : { at: at.toISOString() }) };
}

/** Docker's framed log buffer (8-byte headers, see demuxBuffer) as lines with their stream. */
export function framedLines(buffer: Buffer): ServiceLogLine[] {
  const pending = { stdout: '', stderr: '' };
  const lines: ServiceLogLine[] = [];
  let offset = 0;
  while (offset + 8 <= buffer.length) {
    const kind = buffer[offset];
    const size = buffer.readUInt32BE(offset + 4);
    if (kind > 2 || buffer[offset + 1] !== 0) {
      // Not framed (a container with a TTY): one stream of plain text.
      return buffer.subarray(offset).toString('utf8').split('\n').filter(Boolean).map((line) => ({ stream: 'stdout', line }));
    }
    const stream = kind === 2 ? 'stderr' : 'stdout';
    const parts = (pending[stream] + buffer.subarray(offset + 8, offset + 8 + size).toString('utf8')).split('\n');
    pending[stream] = parts.pop() ?? '';
    for (const line of parts) lines.push({ stream, line: line.replace(/\r$/, '') });
    offset += 8 + size;
  }
  for (const stream of ['stdout', 'stderr'] as const) if (pending[stream]) lines.push({ stream, line: pending[stream] });
  return lines;
}
