import { randomUUID } from 'node:crypto';
import pg from 'pg';

/**
 * PostgreSQL LISTEN/NOTIFY for the buses that several den replicas on one database share (events,
 * revocations). One dedicated connection per server LISTENs on every channel (a pooled connection
 * would be handed to queries and lose its LISTEN); a NOTIFY goes out on a connection of its own.
 * Each message carries the id of the process that sent it, so a replica skips its own echo:
 * the buses deliver locally at publish time, and a message must reach local listeners once.
 */

/** how the LISTEN connection shows in pg_stat_activity (operators and tests find it by this name) */
export const LISTEN_APPLICATION_NAME = 'den bus listener';
/** PostgreSQL refuses a NOTIFY payload of 8000 bytes or more; this leaves room for the envelope. */
const NOTIFY_PAYLOAD_LIMIT_BYTES = 7_900;
/** Reconnect backoff of the LISTEN connection: doubling from the first to the last, with jitter. */
const RECONNECT_FIRST_MS = 100;
const RECONNECT_MAX_MS = 5_000;

export interface PgNotifier {
  /** Resolves once the LISTEN connection is up (or, if the first attempt failed, when a retry succeeds). */
  readonly ready: Promise<void>;
  /** Calls `handler` with each message another process sends on `channel`. Register before `ready`. */
  listen(channel: string, handler: (message: unknown) => void): void;
  /**
   * Sends `message` (JSON) to every other process listening on `channel`, in publish order.
   * Returns false when the message is too large for a NOTIFY and was not sent.
   */
  notify(channel: string, message: unknown): boolean;
  /** Calls `handler` after the LISTEN connection came back: messages sent meanwhile were missed. */
  onReconnect(handler: () => void): void;
  close(): Promise<void>;
}

export interface PgNotifierOptions {
  databaseUrl: string;
  log: { error(details: object, message: string): void; warn(details: object, message: string): void };
}

export function createPgNotifier(options: PgNotifierOptions): PgNotifier {
  const origin = randomUUID();
  const handlers = new Map<string, (message: unknown) => void>();
  const reconnectHandlers: (() => void)[] = [];
  /** the LISTEN connection being opened or open; errors of an older one are ignored */
  let current: pg.Client | undefined;
  /** set once `current` listens on every channel */
  let listener: pg.Client | undefined;
  let closed = false;
  let connectedOnce = false;
  let attempt = 0;
  let retry: NodeJS.Timeout | undefined;
  let markReady!: () => void;
  const ready = new Promise<void>((resolve) => (markReady = resolve));

  // NOTIFYs go through one connection, one at a time: two pooled connections could commit two
  // messages in the other order, and subscribers expect a workspace's events in publish order.
  const sender = new pg.Pool({ connectionString: options.databaseUrl, max: 1 });
  sender.on('error', (error) => options.log.warn({ err: error }, 'the NOTIFY connection to PostgreSQL failed; it reconnects on the next message'));
  let sending: Promise<unknown> = Promise.resolve();

  void connect();

  async function connect(): Promise<void> {
    retry = undefined;
    const client = new pg.Client({ connectionString: options.databaseUrl, application_name: LISTEN_APPLICATION_NAME });
    current = client;
    client.on('notification', (notification) => deliver(notification.channel, notification.payload));
    client.on('error', (error) => lost(client, error));
    client.on('end', () => lost(client));
    try {
      await client.connect();
      for (const channel of handlers.keys()) await client.query(`LISTEN ${quoteChannel(channel)}`);
    } catch (error) {
      lost(client, error);
      return;
    }
    if (closed) {
      await client.end().catch(() => undefined);
      return;
    }
    listener = client;
    attempt = 0;
    if (connectedOnce) for (const handler of reconnectHandlers) handler();
    connectedOnce = true;
    markReady();
  }

  function lost(client: pg.Client, error?: unknown): void {
    if (closed || retry || client !== current) return;
    current = undefined;
    listener = undefined;
    client.removeAllListeners('end');
    client.end().catch(() => undefined);
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** attempt++) * (0.5 + Math.random() / 2);
    options.log.warn({ err: error, retryInMs: Math.round(delay) }, 'the LISTEN connection to PostgreSQL was lost; other replicas\' events and revocations are not heard until it reconnects');
    // unref: a retry alone must not keep a process alive that is otherwise done
    retry = setTimeout(() => void connect(), delay).unref();
  }

  function deliver(channel: string, payload: string | undefined): void {
    const handler = handlers.get(channel);
    if (!handler || payload === undefined) return;
    let envelope: { o?: unknown; m?: unknown };
    try {
      envelope = JSON.parse(payload);
    } catch (error) {
      options.log.error({ err: error, channel }, 'a NOTIFY payload was not JSON; it was ignored');
      return;
    }
    if (typeof envelope !== 'object' || envelope === null) {
      options.log.error({ channel }, 'a NOTIFY payload was not an object; it was ignored');
      return;
    }
    if (envelope.o === origin) return;
    try {
      handler(envelope.m);
    } catch (error) {
      options.log.error({ err: error, channel }, 'a NOTIFY handler failed');
    }
  }

  return {
    ready,
    listen(channel, handler) {
      handlers.set(channel, handler);
      // a connection already up hears the new channel from now on; one that is (re)connecting LISTENs to every channel
      const client = listener;
      client?.query(`LISTEN ${quoteChannel(channel)}`).catch((error) => lost(client, error));
    },
    notify(channel, message) {
      const payload = JSON.stringify({ o: origin, m: message });
      if (Buffer.byteLength(payload) > NOTIFY_PAYLOAD_LIMIT_BYTES) return false;
      sending = sending
        .then(() => sender.query('select pg_notify($1, $2)', [channel, payload]))
        .catch((error) => options.log.error({ err: error, channel }, 'sending a NOTIFY failed; other replicas miss this message'));
      return true;
    },
    onReconnect(handler) {
      reconnectHandlers.push(handler);
    },
    async close() {
      closed = true;
      clearTimeout(retry);
      markReady();
      await sending;
      const client = current;
      current = undefined;
      listener = undefined;
      client?.removeAllListeners('end');
      await client?.end().catch(() => undefined);
      await sender.end();
    },
  };
}

/** Channel names are den's own constants; quoting keeps LISTEN correct for any of them. */
function quoteChannel(channel: string): string {
  return `"${channel.replaceAll('"', '""')}"`;
}
