import type { Kysely } from 'kysely';

// Frozen in time: imports nothing from the app, never changes after release.
//
// The health of each app a template declares a health check for (docs/apps.md), as the replica
// that holds the workspace's agent last saw it: written when it changes, so every replica reads it.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('app_health')
    .addColumn('workspace_id', 'text', (c) => c.notNull().references('workspaces.id').onDelete('cascade'))
    .addColumn('app', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull())
    .addColumn('message', 'text')
    .addColumn('since', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('app_health_pk', ['workspace_id', 'app'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('app_health').ifExists().execute();
}
