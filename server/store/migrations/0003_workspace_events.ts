import type { Kysely } from 'kysely';

// Frozen in time: imports nothing from the app, never changes after release.
//
// Things that happened to a workspace that its owner should be able to see, recorded by the
// server (the agent hub today): kind is a stable snake_case name, message a full sentence,
// detail_json the cause as JSON. Each workspace keeps only its newest events
// (server/workspaces/events.ts trims on insert), so the table cannot grow from one workspace.
export async function up(db: Kysely<any>, dialect: 'sqlite' | 'postgres'): Promise<void> {
  await db.schema
    .createTable('workspace_events')
    .addColumn('id', dialect === 'postgres' ? 'bigserial' : 'integer', (c) =>
      dialect === 'postgres' ? c.primaryKey() : c.primaryKey().autoIncrement())
    .addColumn('workspace_id', 'text', (c) => c.notNull().references('workspaces.id').onDelete('cascade'))
    .addColumn('ts', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('message', 'text', (c) => c.notNull())
    .addColumn('detail_json', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('workspace_events_workspace').on('workspace_events').columns(['workspace_id', 'id']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('workspace_events').ifExists().execute();
}
