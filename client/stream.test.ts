import { describe, expect, test } from 'vitest';
import { readEvents, readLines } from './stream.ts';

/** A byte stream delivered in the given chunks, to exercise lines and characters split across reads. */
function chunked(...chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(typeof chunk === 'string' ? encoder.encode(chunk) : chunk);
      controller.close();
    },
  });
}

async function collect<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of iterable) items.push(item);
  return items;
}

describe('readLines', () => {
  test('joins lines split across chunks, including a split multi-byte character', async () => {
    const bytes = new TextEncoder().encode('héllo\r\nwor');
    const lines = await collect(readLines(chunked(bytes.slice(0, 2), bytes.slice(2), 'ld\nlast')));
    expect(lines).toEqual(['héllo', 'world', 'last']);
  });
});

describe('readEvents', () => {
  test('parses one JSON value per NDJSON line and skips blank lines', async () => {
    const events = await collect(readEvents(chunked('{"id":1}\n\n{"id"', ':2}\n'), 'ndjson'));
    expect(events).toEqual([{ id: 1 }, { id: 2 }]);
  });

  test('parses server-sent events, ignoring comments and ids', async () => {
    const events = await collect(readEvents(chunked(': keep-alive\n\nid: 1\ndata: {"id":1}\n\n', 'event: end\ndata: {}\n\n'), 'sse'));
    expect(events).toEqual([{ id: 1 }, {}]);
  });
});
