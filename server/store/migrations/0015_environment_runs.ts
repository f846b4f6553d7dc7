import type { Kysely } from 'kysely';

// Frozen in time: imports nothing from the app, never changes after release.
//
// The environment dev loop (docs/environments.md): the version each service of a workspace was
// last started at; each run of a task or test with the version it ran at, its outcome and the
// bounded tail of its output; and the teammates a workspace's owner let see its environment
// read-only.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('environment_service_versions')
    .addColumn('workspace_id', 'text', (c) => c.notNull().references('workspaces.id').onDelete('cascade'))
    .addColumn('service', 'text', (c) => c.notNull())
    .addColumn('version', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('environment_service_versions_pk', ['workspace_id', 'service'])
    .execute();
  await db.schema
    .createTable('environment_runs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('workspace_id', 'text', (c) => c.notNull().references('workspaces.id').onDelete('cascade'))
    .addColumn('kind', 'text', (c) => c.notNull()) // task | test
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('version', 'text', (c) => c.notNull())
    .addColumn('state', 'text', (c) => c.notNull()) // running | passed | failed
    .addColumn('exit_code', 'integer')
    .addColumn('trigger', 'text', (c) => c.notNull()) // build | user
    .addColumn('user_id', 'text')
    .addColumn('build_id', 'text')
    .addColumn('log', 'text', (c) => c.notNull().defaultTo(''))
    .addColumn('log_dropped_bytes', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('started_at', 'text', (c) => c.notNull())
    .addColumn('finished_at', 'text')
    .execute();
  await db.schema.createIndex('environment_runs_entry').on('environment_runs').columns(['workspace_id', 'kind', 'name', 'started_at']).execute();
  await db.schema
    .createTable('environment_grants')
    .addColumn('workspace_id', 'text', (c) => c.notNull().references('workspaces.id').onDelete('cascade'))
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('granted_by', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('environment_grants_pk', ['workspace_id', 'user_id'])
    .execute();
  await db.schema.createIndex('environment_grants_user').on('environment_grants').column('user_id').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('environment_grants').ifExists().execute();
  await db.schema.dropTable('environment_runs').ifExists().execute();
  await db.schema.dropTable('environment_service_versions').ifExists().execute();
}
