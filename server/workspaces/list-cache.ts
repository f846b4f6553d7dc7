import { CompiledQuery, type Kysely } from 'kysely';
import type { Store } from '../store/connect.ts';
import type { Database } from '../store/schema.ts';

/**
 * Encoded `GET /workspaces` pages, reused until the store changes (both dialects).
 *
 * Why: with 1,000 workspaces a 50-item page costs ~1 ms of server CPU (most of it turning ~1,000
 * column values into JS strings) plus, on PostgreSQL, ~1–2 ms in the database; on 2 cores that is
 * more than the p99 target's whole budget at 50 clients. A hit costs one single-row read.
 *
 * Why it cannot serve a stale page:
 *  - The key is what the page depends on besides the store: the owner filter (decided by the
 *    route after authorization), limit and offset. Principals only pick the owner filter.
 *  - Migration 0002 bumps `list_generation.n` by trigger, in the writer's own transaction, on
 *    every insert, update and delete of each table the list query reads (workspaces, builds,
 *    users, templates, template_versions), whoever writes: routes, build workers, agent state
 *    updates, another replica on the same PostgreSQL, another process on the same SQLite file.
 *    A commit makes the bump and the change visible together.
 *  - Each request reads the counter (by a statement sent after it arrived) first and the page after, so a page stored under generation
 *    G was read from the state at G or later; it is stored only while no request has seen a newer
 *    generation, and a request that sees a different generation drops every stored page.
 * So each replica keeps its own pages and never serves one older than the request's start.
 */
const MAX_BYTES = 16 * 1024 * 1024;

interface Pages {
  generation: number;
  bytes: number;
  /** insertion-ordered: the first entry is the least recently used */
  bodies: Map<string, Buffer>;
  /** the generation read on its way to the database, if any */
  reading: Promise<unknown>;
  /** the read that requests arriving now share; it is sent once `reading` is done */
  nextRead: Promise<number> | undefined;
}

const GENERATION = CompiledQuery.raw('select n from list_generation where id = 1');
const pagesByDb = new WeakMap<Kysely<Database>, Pages>();

/** The page for `key` as JSON bytes: from the cache when the store has not changed, else from `load`. */
export async function cachedListPage(store: Store, key: string, load: () => Promise<unknown>): Promise<Buffer> {
  let pages = pagesByDb.get(store.db);
  if (!pages) {
    pages = { generation: -1, bytes: 0, bodies: new Map(), reading: Promise.resolve(), nextRead: undefined };
    pagesByDb.set(store.db, pages);
  }
  const generation = await readGeneration(store.db, pages);
  if (pages.generation !== generation) {
    pages.generation = generation;
    pages.bytes = 0;
    pages.bodies.clear();
  }
  const hit = pages.bodies.get(key);
  if (hit) {
    pages.bodies.delete(key);
    pages.bodies.set(key, hit);
    return hit;
  }
  const body = Buffer.from(JSON.stringify(await load()));
  // Another request may have seen a newer generation while this one read its page.
  if (pages.generation === generation) remember(pages, key, body);
  return body;
}

/**
 * The counter, read by a statement sent after the caller arrived (so it reflects every commit
 * that came before the request), shared by all callers that arrived while the previous read was
 * on its way: at 50 concurrent clients on PostgreSQL that turns a round trip per request (~0.25 ms
 * of server CPU, mostly the socket write) into one per batch.
 */
function readGeneration(db: Kysely<Database>, pages: Pages): Promise<number> {
  if (pages.nextRead) return pages.nextRead;
  const read = pages.reading.then(async () => {
    // Let the requests that arrived in this turn of the event loop join: a synchronous driver
    // (node:sqlite) would otherwise read once per request and answer each in its own turn.
    await new Promise((resolve) => setImmediate(resolve));
    pages.nextRead = undefined; // later arrivals must wait for a read sent after them
    return Number((await db.executeQuery<{ n: number | string }>(GENERATION)).rows[0].n);
  });
  pages.nextRead = read;
  pages.reading = read.catch(() => undefined);
  return read;
}

function remember(pages: Pages, key: string, body: Buffer): void {
  if (body.length > MAX_BYTES) return;
  pages.bodies.set(key, body);
  pages.bytes += body.length;
  for (const [oldest, old] of pages.bodies) {
    if (pages.bytes <= MAX_BYTES) break;
    pages.bodies.delete(oldest);
    pages.bytes -= old.length;
  }
}
