import type { Kysely } from 'kysely';

// Frozen in time: imports nothing from the app, never changes after release.
//
// What replicas of one deployment (den servers on one PostgreSQL database) share beyond the
// buses:
//  - replicas: each live server process, the URL other replicas reach it at, and the sha256 of
//    the secret it presents when it dials them (the secret itself never leaves its process but on
//    that connection). A row whose expires_at passed belongs to a replica that died; its agent
//    locations are removed by whichever replica sees it first.
//  - agent_locations: which replica holds the connection of which agent (agent_key is opaque to
//    the store: the workspace id today), written on connect, removed on disconnect.
//  - login_counters / login_slots: the login limits' counts and pacing (server/auth), so a
//    password guesser meets the same limits whichever replica answers. Times are milliseconds
//    since the epoch.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('replicas')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('url', 'text', (c) => c.notNull())
    .addColumn('secret_hash', 'text', (c) => c.notNull())
    .addColumn('started_at', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('agent_locations')
    .addColumn('agent_key', 'text', (c) => c.primaryKey())
    .addColumn('replica_id', 'text', (c) => c.notNull())
    .addColumn('connected_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('agent_locations_replica').on('agent_locations').column('replica_id').execute();
  await db.schema
    .createTable('login_counters')
    .addColumn('key', 'text', (c) => c.primaryKey())
    .addColumn('count', 'bigint', (c) => c.notNull())
    .addColumn('resets_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema
    .createTable('login_slots')
    .addColumn('key', 'text', (c) => c.primaryKey())
    .addColumn('next_at', 'bigint', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ['login_slots', 'login_counters', 'agent_locations', 'replicas']) {
    await db.schema.dropTable(table).ifExists().execute();
  }
}
