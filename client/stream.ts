/**
 * Readers for streamed responses: NDJSON (one JSON value per line) and server-sent events
 * (`data:` lines, events separated by a blank line). Web streams only, so browsers can use them.
 */
export async function* readEvents(body: ReadableStream<Uint8Array>, format: 'ndjson' | 'sse'): AsyncGenerator<unknown> {
  const lines = readLines(body);
  if (format === 'ndjson') {
    for await (const line of lines) {
      if (line.trim()) yield JSON.parse(line);
    }
    return;
  }
  let data: string[] = [];
  let event = 'message';
  for await (const line of lines) {
    if (line === '') {
      if (data.length > 0 && event !== 'ping') yield JSON.parse(data.join('\n'));
      data = [];
      event = 'message';
    } else if (line.startsWith('data:')) {
      data.push(line.slice(line.startsWith('data: ') ? 6 : 5));
    } else if (line.startsWith('event:')) {
      event = line.slice(6).trim();
    }
    // `id:`, `retry:` and `:` comments (keep-alives) carry nothing we need.
  }
  if (data.length > 0 && event !== 'ping') yield JSON.parse(data.join('\n'));
}

/** Splits a byte stream into text lines (without the line ending), handling chunks that split lines or characters. */
export async function* readLines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let buffered = '';
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      let newline = buffered.indexOf('\n');
      while (newline >= 0) {
        yield buffered.slice(0, newline).replace(/\r$/, '');
        buffered = buffered.slice(newline + 1);
        newline = buffered.indexOf('\n');
      }
    }
    buffered += decoder.decode();
    if (buffered) yield buffered.replace(/\r$/, '');
  } finally {
    reader.releaseLock();
    await body.cancel().catch(() => {});
  }
}
