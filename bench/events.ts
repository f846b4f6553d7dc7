// Events delivered per second through GET /api/v1/events: a real den server (no runtime work:
// the idle driver, no build workers) publishes agent events of one member's workspace on its bus;
// owner and member subscribers read them over loopback HTTP. The member's stream pays the
// authorization check (the workspace's owner, cached after the first event).
import { startTestServer } from '../test/support/harness.ts';
import { idleDriver } from '../test/support/idle-driver.ts';
import { createUserWithToken, setupOwner } from '../test/support/users.ts';
import { seedWorkspace } from '../test/support/workspace-seed.ts';
import { round, waitFor } from './support.ts';

const EVENTS = 20_000;
const BATCH = 200;
/** A subscriber further behind than this makes the publisher wait, as far below the drop limit. */
const MAX_LAG = 400;
const SUBSCRIBERS_PER_ROLE = 2;
/** How long the publisher waits for a lagging subscriber before it gives up (it used to wait for ever). */
const LAG_TIMEOUT_MS = 30_000;

export async function eventsBenchmark(options: { say: (line: string) => void }): Promise<{ events_delivered_per_s: number; events_subscribers: number }> {
  const server = await startTestServer({ listen: true, driver: () => idleDriver, startWorkers: false });
  const readers: Array<{ received: number; abort: AbortController; ended?: string }> = [];
  try {
    const owner = await setupOwner(server.app);
    const member = await createUserWithToken(server.app, owner.token, 'member', 'alice');
    const { workspaceId } = await seedWorkspace(server.store.db, { username: 'alice', workspaceName: 'dev', userId: member.userId });
    for (const token of [...Array(SUBSCRIBERS_PER_ROLE).fill(owner.token), ...Array(SUBSCRIBERS_PER_ROLE).fill(member.token)]) {
      readers.push(await openReader(server.url!, token));
    }
    const subscribers = readers.length;
    options.say(`events: ${EVENTS} published to ${subscribers} subscribers (${SUBSCRIBERS_PER_ROLE} owner, ${SUBSCRIBERS_PER_ROLE} member)`);
    const started = performance.now();
    for (let published = 0; published < EVENTS;) {
      for (let i = 0; i < BATCH; i++, published++) {
        server.den.events.publish({ type: 'agent', workspaceId, at: new Date().toISOString(), state: 'ready' });
      }
      // A reader whose stream ended (the server dropped it, or it never opened) would be waited on forever: fail instead.
      const lagging = performance.now();
      while (readers.some((reader) => published - reader.received > MAX_LAG)) {
        const gone = readers.find((reader) => reader.ended);
        if (gone) throw new Error(`an event stream ended after ${gone.received} events (${gone.ended}); the benchmark cannot go on`);
        if (performance.now() - lagging > LAG_TIMEOUT_MS) throw new Error(`a subscriber stayed ${MAX_LAG} events behind for ${LAG_TIMEOUT_MS} ms`);
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    }
    await waitFor(async () => readers.every((reader) => reader.received >= EVENTS), 60_000, 'every event delivered', 1);
    const seconds = (performance.now() - started) / 1000;
    return { events_delivered_per_s: round((EVENTS * subscribers) / seconds), events_subscribers: subscribers };
  } finally {
    for (const reader of readers) reader.abort.abort();
    await server.close();
  }
}

/** A subscriber that counts the events it reads (one `id:` line each). */
async function openReader(url: string, token: string): Promise<{ received: number; abort: AbortController; ended?: string }> {
  const abort = new AbortController();
  const response = await fetch(`${url}/api/v1/events`, { headers: { authorization: `Bearer ${token}` }, signal: abort.signal });
  if (!response.ok) throw new Error(`GET /api/v1/events answered ${response.status}: ${await response.text()}`);
  const reader: { received: number; abort: AbortController; ended?: string } = { received: 0, abort };
  const decoder = new TextDecoder();
  void (async () => {
    let carry = '';
    for await (const chunk of response.body!) {
      const text = carry + decoder.decode(chunk, { stream: true });
      const cut = text.lastIndexOf('\n');
      for (const line of text.slice(0, cut + 1).split('\n')) if (line.startsWith('id: ')) reader.received++;
      carry = text.slice(cut + 1);
    }
    reader.ended ??= 'the server closed the stream';
  })().catch((error: unknown) => {
    reader.ended ??= (error as Error).message;
  });
  return reader;
}

if (import.meta.main) {
  const say = (line: string) => process.stderr.write(`${line}\n`);
  console.log(JSON.stringify(await eventsBenchmark({ say })));
}
