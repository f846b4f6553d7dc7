import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Kysely, PostgresDialect, SqliteDialect } from 'kysely';
import { Migrator, type Migration } from 'kysely/migration';
import pg from 'pg';
import type { Database } from './schema.ts';
import { openNodeSqlite } from './sqlite.ts';
import * as m0001 from './migrations/0001_initial.ts';
import * as m0002 from './migrations/0002_list_generation.ts';
import * as m0003 from './migrations/0003_workspace_events.ts';
import * as m0004 from './migrations/0004_reconcile.ts';
import * as m0005 from './migrations/0005_build_cancel.ts';
import * as m0006 from './migrations/0006_agents.ts';
import * as m0007 from './migrations/0007_replicas.ts';
import * as m0009 from './migrations/0009_ssh_gateway.ts';
import * as m0013 from './migrations/0013_app_tokens.ts';
import * as m0015 from './migrations/0015_environment_runs.ts';
import * as m0016 from './migrations/0016_app_health.ts';
import * as m0018 from './migrations/0018_groups.ts';

export type Dialect = 'sqlite' | 'postgres';

export interface Store {
  db: Kysely<Database>;
  dialect: Dialect;
  close(): Promise<void>;
}

export interface StoreOptions {
  /** postgres://... ; when absent, SQLite in `dataDir` */
  databaseUrl?: string;
  dataDir?: string;
  /** an explicit SQLite file (tests use ':memory:' or a temp file) */
  sqlitePath?: string;
}

const MIGRATIONS: Record<string, { up: (db: Kysely<any>, dialect: Dialect) => Promise<void>; down?: (db: Kysely<any>, dialect: Dialect) => Promise<void> }> = {
  '0001_initial': m0001,
  '0002_list_generation': m0002,
  '0003_workspace_events': m0003,
  '0004_reconcile': m0004,
  '0005_build_cancel': m0005,
  '0006_agents': m0006,
  '0007_replicas': m0007,
  '0009_ssh_gateway': m0009,
  '0013_app_tokens': m0013,
  '0015_environment_runs': m0015,
  '0016_app_health': m0016,
  '0018_groups': m0018,
};

/** Opens the store and brings its schema to the newest migration. */
export async function openStore(options: StoreOptions): Promise<Store> {
  const dialect: Dialect = options.databaseUrl ? 'postgres' : 'sqlite';
  const db = new Kysely<Database>({
    dialect:
      dialect === 'postgres'
        ? new PostgresDialect({ pool: new pg.Pool({ connectionString: options.databaseUrl, max: 10 }) })
        : new SqliteDialect({ database: openNodeSqlite(sqlitePath(options)) }),
  });
  await migrate(db, dialect);
  return { db, dialect, close: () => db.destroy() };
}

async function migrate(db: Kysely<Database>, dialect: Dialect): Promise<void> {
  const migrator = new Migrator({
    db,
    provider: {
      async getMigrations() {
        const out: Record<string, Migration> = {};
        for (const [name, migration] of Object.entries(MIGRATIONS)) {
          out[name] = { up: (d) => migration.up(d, dialect), down: migration.down && ((d) => migration.down!(d, dialect)) };
        }
        return out;
      },
    },
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((r) => r.status === 'Error')?.migrationName ?? 'unknown';
    throw new Error(`Database migration ${failed} failed; the database was left at the previous version.`, { cause: error });
  }
}

function sqlitePath(options: StoreOptions): string {
  if (options.sqlitePath) return options.sqlitePath;
  const dir = options.dataDir ?? '.den';
  mkdirSync(dir, { recursive: true });
  return join(dir, 'den.sqlite');
}
