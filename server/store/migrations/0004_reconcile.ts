import type { Kysely } from 'kysely';

// Frozen in time: imports nothing from the app, never changes after release.
//
// What the reconciler observes after a workspace's build, kept apart from `status` (which only
// the workspace lifecycle writes):
//  - health: null (nothing observed), 'ok' (recovered) or 'down' (the agent, the container or a
//    service died); health_message is a full sentence for the owner, health_at when it was seen;
//  - agent_disconnected_at: when the workspace's agent connection closed (null while connected or
//    never connected), written by whichever replica held the connection, so the reconciler reads
//    it through the store;
//  - leases: one row per singleton job of a deployment (the reconcile loop), held by one replica
//    until it expires.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('workspaces').addColumn('health', 'text').execute();
  await db.schema.alterTable('workspaces').addColumn('health_message', 'text').execute();
  await db.schema.alterTable('workspaces').addColumn('health_at', 'text').execute();
  await db.schema.alterTable('workspaces').addColumn('agent_disconnected_at', 'text').execute();
  await db.schema
    .createTable('leases')
    .addColumn('name', 'text', (c) => c.primaryKey())
    .addColumn('owner', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'text', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('leases').ifExists().execute();
  for (const column of ['health', 'health_message', 'health_at', 'agent_disconnected_at']) {
    await db.schema.alterTable('workspaces').dropColumn(column).execute();
  }
}
