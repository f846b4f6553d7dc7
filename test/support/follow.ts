import { expect } from 'vitest';
import { waitFor } from '../../agent/terminal/testing.ts';

/** How long a follow may take to send its first bytes. */
const FOLLOW_OPEN_TIMEOUT_MS = 15_000;

/** A followed log (NDJSON or SSE) read in the background. */
export interface FollowedLog {
  /** resolves when the server ended it (or the test closed it), with the coded error of its last line */
  ended: Promise<{ errorCode?: string; message?: string }>;
  isOpen(): boolean;
  close(): void;
}

/** Opens a followed log at `url`; returns once its first bytes arrived. */
export async function openFollowedLog(url: string, headers: Record<string, string>, kind: string): Promise<FollowedLog> {
  const abort = new AbortController();
  const response = await fetch(url, { headers: { ...headers, connection: 'close' }, signal: abort.signal });
  expect(response.status, `${kind} follow`).toBe(200);
  let open = true;
  let text = '';
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  const ended = (async () => {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
    } catch {
      // aborted by the test (a bystander closed) or cut by the server
    }
    open = false;
    const last = (text.trim().split('\n').at(-1) ?? '').replace(/^data: /, '');
    const envelope = last.startsWith('{"error"') ? JSON.parse(last) : undefined;
    return { errorCode: envelope?.error.code as string | undefined, message: envelope?.error.message as string | undefined };
  })();
  await waitFor(() => text.length > 0 || !open, FOLLOW_OPEN_TIMEOUT_MS, `the ${kind} follow's first bytes`);
  return { ended, isOpen: () => open, close: () => abort.abort() };
}
