import type { Kysely } from 'kysely';

// Frozen in time: imports nothing from the app, never changes after release.
//
// Tokens of the app proxy's subdomain mode (docs/apps.md): a one-time `code` den hands to an app
// origin in a redirect, and the `cookie` that origin sets in exchange, each scoped to one app
// host and stored only as a hash.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('app_tokens')
    .addColumn('id_hash', 'text', (c) => c.primaryKey())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
    .addColumn('host', 'text', (c) => c.notNull())
    .addColumn('created_at', 'text', (c) => c.notNull())
    .addColumn('expires_at', 'text', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('app_tokens_expires_at').on('app_tokens').column('expires_at').execute();
  await db.schema
    .createTable('app_shares')
    .addColumn('workspace_id', 'text', (c) => c.notNull().references('workspaces.id').onDelete('cascade'))
    .addColumn('target', 'text', (c) => c.notNull())
    .addColumn('level', 'text', (c) => c.notNull())
    .addColumn('updated_at', 'text', (c) => c.notNull())
    .addPrimaryKeyConstraint('app_shares_pk', ['workspace_id', 'target'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('app_shares').ifExists().execute();
  await db.schema.dropTable('app_tokens').ifExists().execute();
}
