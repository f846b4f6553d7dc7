import type { EnvironmentLogLine } from '../../protocol/environments.ts';
import type { RuntimeDriver, ServiceLogLine, WorkspaceIdentity } from '../runtimes/driver.ts';

/**
 * Several services' output as one stream (`den env logs WS [SERVICE...] [-f]`), each line with
 * its service and a time: the runtime's own when it keeps one (docker), else when den read the
 * line (the process runtime's log file has no times). Without `follow` each service's tail is
 * read whole and the lines are merged by time (a stable sort: a service's own order stays);
 * with `follow`, after those tails, live lines go out in the order they arrive. At most
 * `tail` lines per service are read, and the readers are paced by the consumer, so memory stays
 * bounded by `services x tail` lines.
 */
export async function mergedServiceLogs(
  driver: Pick<RuntimeDriver, 'serviceLogs'>, workspace: WorkspaceIdentity, services: readonly string[],
  options: { tail: number; follow: boolean; signal: AbortSignal; now: () => Date },
): Promise<AsyncIterable<EnvironmentLogLine>> {
  // Opened before the first line, so a service without output answers with its coded error.
  const sources = await Promise.all(services.map(async (service) => ({
    service,
    lines: await driver.serviceLogs(workspace, service, { tail: options.tail, follow: options.follow, signal: options.signal }),
  })));
  const stamp = (service: string, entry: ServiceLogLine): EnvironmentLogLine => ({
    service, at: entry.at ?? options.now().toISOString(), stream: entry.stream, line: entry.line,
  });
  if (!options.follow) {
    return (async function* () {
      const all: EnvironmentLogLine[] = [];
      for (const { service, lines } of sources) for await (const entry of lines) all.push(stamp(service, entry));
      yield* all.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
    })();
  }
  return interleave(sources.map(({ service, lines }) => mapLines(lines, (entry) => stamp(service, entry))), options.signal);
}

async function* mapLines<T, U>(source: AsyncIterable<T>, map: (item: T) => U): AsyncGenerator<U> {
  for await (const item of source) yield map(item);
}

/** Items of several iterators as each comes, one pending read per iterator; ends when all end or `signal` aborts. */
async function* interleave<T>(sources: AsyncIterator<T>[], signal: AbortSignal): AsyncGenerator<T> {
  const pending = new Map<number, Promise<{ index: number; result: IteratorResult<T> }>>();
  const next = (index: number) => pending.set(index, sources[index].next().then((result) => ({ index, result })));
  sources.forEach((_, index) => next(index));
  const aborted = new Promise<'aborted'>((resolve) => {
    if (signal.aborted) resolve('aborted');
    signal.addEventListener('abort', () => resolve('aborted'), { once: true });
  });
  try {
    while (pending.size > 0) {
      const winner = await Promise.race([...pending.values(), aborted]);
      if (winner === 'aborted') return;
      if (winner.result.done) {
        pending.delete(winner.index);
        continue;
      }
      next(winner.index);
      yield winner.result.value;
    }
  } finally {
    // not awaited: a generator's return waits for its pending read, which ends only with `signal`
    for (const source of sources) void source.return?.().catch(() => undefined);
  }
}
