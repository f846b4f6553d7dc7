import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { hostname } from 'node:os';
import type { Kysely } from 'kysely';
import type { Database } from '../store/schema.ts';
import type { PgNotifier } from '../store/pg-notify.ts';
import { iso, type Clock } from '../store/time.ts';

/**
 * This process as one replica of a deployment, and the directory of which replica holds which
 * agent. Both live in the store (tables `replicas` and `agent_locations`), so any replica can
 * find the agent a user asks for; on PostgreSQL each change is also announced over NOTIFY, so
 * the others' directories follow at once instead of asking the store on every lookup.
 *
 * Each replica makes a random secret when it starts and keeps only its sha256 in the store; it
 * presents the secret when it dials another replica's relay, which checks it against the hash
 * (see relay-server.ts). Nothing a user holds opens the relay.
 */
export interface Replicas {
  /** this process's replica id (host:pid:random) */
  readonly id: string;
  /** the secret this replica presents to the others; never stored, never logged */
  readonly secret: string;
  /** Writes this replica's row and starts its heartbeat (which also removes dead replicas' agents). */
  start(): Promise<void>;
  /** Records that the agent `key` is connected here (a newer connection elsewhere overwrites it). */
  holdAgent(key: string): void;
  /** Records that the agent `key` is no longer connected here (a record of another replica stays). */
  releaseAgent(key: string): void;
  /**
   * The live replica other than this one that holds the agent `key`, from the directory; asks
   * the store when the directory does not know it (a NOTIFY may still be on its way) or when
   * `fresh` is set (the replica the directory named no longer had the agent).
   */
  locate(key: string, options?: { fresh?: boolean }): Promise<PeerReplica | undefined>;
  /** Whether another live replica holds the agent `key`, as far as the directory knows now. */
  heldElsewhere(key: string): boolean;
  /** The replica `id` when it is alive and `secret` is its own; undefined otherwise. */
  verifyPeer(id: string, secret: string): Promise<PeerReplica | undefined>;
  /**
   * Calls `handler` when an agent connected here connected to another replica too (a reconnect
   * this replica has not noticed the end of, or a second process with its token): the older
   * connection here should go, as it would on one server.
   */
  onTakenElsewhere(handler: (key: string) => void): void;
  /** Calls `handler` with the agent keys of a replica found dead (its heartbeat expired), once per replica. */
  onReplicaLost(handler: (keys: string[], at: Date) => void): void;
  /**
   * Stops the heartbeat and marks this replica expired (graceful shutdown): the next heartbeat of
   * another replica finds it gone and takes its agents over, as if it had died, but at once
   * instead of after three missed heartbeats.
   */
  stop(): Promise<void>;
}

export interface PeerReplica {
  id: string;
  url: string;
}

export interface ReplicasDeps {
  db: Kysely<Database>;
  clock: Clock;
  /** where other replicas reach this one */
  url: string;
  /** PostgreSQL's NOTIFY, to keep the other replicas' directories current; absent on SQLite */
  notifier?: PgNotifier;
  log: { error(details: object, message: string): void; warn(details: object, message: string): void };
  /** how often the row is renewed; a replica silent for three intervals is taken for dead */
  heartbeatMs?: number;
}

/** 5 s: a killed replica's agents are known to be gone within 15-20 s, for one small UPDATE per replica every 5 s. */
const DEFAULT_HEARTBEAT_MS = 5_000;
const LOCATIONS_CHANNEL = 'den_agent_locations';

export function createReplicas(deps: ReplicasDeps): Replicas {
  const { db, clock } = deps;
  const heartbeatMs = deps.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  const id = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  const secret = randomBytes(32).toString('base64url');
  /** agent key -> the replica holding it, for agents held by other replicas */
  const elsewhere = new Map<string, string>();
  /** live peers by id, refreshed by the heartbeat and by lookups */
  const peers = new Map<string, PeerReplica>();
  /** the agents connected here, to record again if another replica took this one for dead */
  const held = new Set<string>();
  /** per agent key, the last write of its location (chained, so connect and disconnect land in order) */
  const writes = new Map<string, Promise<void>>();
  const lostHandlers: ((keys: string[], at: Date) => void)[] = [];
  const takenHandlers: ((key: string) => void)[] = [];
  let timer: NodeJS.Timeout | undefined;
  let beating: Promise<void> = Promise.resolve();
  let stopped = false;

  deps.notifier?.listen(LOCATIONS_CHANNEL, (message) => {
    const change = message as { key?: unknown; replica?: unknown };
    if (typeof change?.key !== 'string') return;
    if (typeof change.replica === 'string' && change.replica !== id) {
      elsewhere.set(change.key, change.replica);
      if (held.has(change.key)) for (const handler of takenHandlers) handler(change.key);
    } else if (change.replica === null && elsewhere.has(change.key)) elsewhere.delete(change.key);
  });
  // messages sent while the LISTEN connection was down are lost: read the directory again
  deps.notifier?.onReconnect(() => void reload());

  const expiresAt = () => iso(new Date(clock.now().getTime() + 3 * heartbeatMs));

  const write = (key: string, change: () => Promise<unknown>) => {
    const next = (writes.get(key) ?? Promise.resolve())
      .then(change)
      .then(() => undefined, (error: unknown) => deps.log.error({ err: error, agentKey: key }, 'could not record which replica holds the agent'))
      .finally(() => { if (writes.get(key) === next) writes.delete(key); });
    writes.set(key, next);
  };

  async function reload(): Promise<void> {
    try {
      const rows = await db.selectFrom('agent_locations as l').innerJoin('replicas as r', 'r.id', 'l.replica_id')
        .select(['l.agent_key', 'r.id', 'r.url']).where('r.id', '!=', id).where('r.expires_at', '>', iso(clock.now())).execute();
      elsewhere.clear();
      for (const row of rows) {
        elsewhere.set(row.agent_key, row.id);
        peers.set(row.id, { id: row.id, url: row.url });
      }
    } catch (error) {
      deps.log.error({ err: error }, 'could not read which replicas hold which agents');
    }
  }

  const recordHeld = (key: string) => write(key, async () => {
    const values = { agent_key: key, replica_id: id, connected_at: iso(clock.now()) };
    await db.insertInto('agent_locations').values(values)
      .onConflict((conflict) => conflict.column('agent_key').doUpdateSet({ replica_id: id, connected_at: values.connected_at })).execute();
    deps.notifier?.notify(LOCATIONS_CHANNEL, { key, replica: id });
  });

  async function heartbeat(): Promise<void> {
    const now = clock.now();
    const renewed = await db.updateTable('replicas').set({ expires_at: expiresAt() }).where('id', '=', id).executeTakeFirst();
    if (Number(renewed.numUpdatedRows) === 0) {
      // Another replica took this one for dead (it stalled past three heartbeats) and removed its
      // records: come back, and say again which agents are connected here.
      deps.log.warn({ replica: id }, 'this replica was taken for dead by another one; registering it again');
      await register();
      for (const key of held) recordHeld(key);
    }
    const dead = await db.selectFrom('replicas').select('id').where('id', '!=', id).where('expires_at', '<=', iso(now)).execute();
    for (const { id: deadId } of dead) {
      // Whoever deletes the row reports the loss, so each dead replica's agents are reported once.
      // One transaction: a replica that was only stalled and registers again meanwhile waits for
      // it, so its fresh agent records are not removed with the old ones.
      const keys = await db.transaction().execute(async (tx) => {
        const deleted = await tx.deleteFrom('replicas').where('id', '=', deadId).where('expires_at', '<=', iso(now)).executeTakeFirst();
        if (Number(deleted.numDeletedRows) !== 1) return undefined;
        return (await tx.deleteFrom('agent_locations').where('replica_id', '=', deadId).returning('agent_key').execute()).map((row) => row.agent_key);
      });
      if (!keys) continue;
      peers.delete(deadId);
      for (const key of keys) {
        if (elsewhere.get(key) === deadId) elsewhere.delete(key);
        deps.notifier?.notify(LOCATIONS_CHANNEL, { key, replica: null });
      }
      deps.log.warn({ replica: deadId, agents: keys.length }, 'a replica stopped renewing its heartbeat; its agent connections are taken for lost');
      for (const handler of lostHandlers) handler(keys, now);
    }
  }

  async function register(): Promise<void> {
    const values = { id, url: deps.url, secret_hash: sha256(secret), started_at: iso(clock.now()), expires_at: expiresAt() };
    await db.insertInto('replicas').values(values)
      .onConflict((conflict) => conflict.column('id').doUpdateSet({ expires_at: values.expires_at })).execute();
  }

  return {
    id,
    secret,

    async start() {
      await register();
      await reload();
      timer = setInterval(() => {
        beating = beating.then(heartbeat).catch((error: unknown) => deps.log.error({ err: error }, 'the replica heartbeat failed; it retries on its next interval'));
      }, heartbeatMs);
      timer.unref();
    },

    holdAgent(key) {
      elsewhere.delete(key);
      held.add(key);
      recordHeld(key);
    },

    releaseAgent(key) {
      held.delete(key);
      write(key, async () => {
        const deleted = await db.deleteFrom('agent_locations').where('agent_key', '=', key).where('replica_id', '=', id).executeTakeFirst();
        if (Number(deleted.numDeletedRows) > 0) deps.notifier?.notify(LOCATIONS_CHANNEL, { key, replica: null });
      });
    },

    heldElsewhere(key) {
      return elsewhere.has(key);
    },

    async locate(key, options) {
      const known = elsewhere.get(key);
      if (known && peers.has(known) && !options?.fresh) return peers.get(known);
      const row = await db.selectFrom('agent_locations as l').innerJoin('replicas as r', 'r.id', 'l.replica_id')
        .select(['r.id', 'r.url']).where('l.agent_key', '=', key).where('r.expires_at', '>', iso(clock.now())).executeTakeFirst();
      if (!row || row.id === id) {
        elsewhere.delete(key);
        return undefined;
      }
      elsewhere.set(key, row.id);
      peers.set(row.id, { id: row.id, url: row.url });
      return { id: row.id, url: row.url };
    },

    async verifyPeer(peerId, presented) {
      if (peerId === id) return undefined;
      const row = await db.selectFrom('replicas').select(['id', 'url', 'secret_hash'])
        .where('id', '=', peerId).where('expires_at', '>', iso(clock.now())).executeTakeFirst();
      if (!row) return undefined;
      const expected = Buffer.from(row.secret_hash, 'hex');
      const given = Buffer.from(sha256(presented), 'hex');
      return expected.length === given.length && timingSafeEqual(expected, given) ? { id: row.id, url: row.url } : undefined;
    },

    onTakenElsewhere(handler) {
      takenHandlers.push(handler);
    },

    onReplicaLost(handler) {
      lostHandlers.push(handler);
    },

    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      await beating;
      await Promise.all(writes.values());
      await db.updateTable('replicas').set({ expires_at: iso(clock.now()) }).where('id', '=', id).execute();
    },
  };
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
