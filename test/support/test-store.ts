import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '../../server/store/connect.ts';
import { createTestDatabase } from './postgres.ts';

/**
 * A fresh, migrated store of the given dialect: a new PostgreSQL database, or a SQLite file in a
 * new temp dir. `close` closes it and removes the database or the dir.
 */
export async function openTestStore(dialect: 'sqlite' | 'postgres'): Promise<{ store: Store; close(): Promise<void> }> {
  if (dialect === 'postgres') {
    const database = await createTestDatabase();
    const store = await openStore({ databaseUrl: database.url });
    return { store, close: async () => { await store.close(); await database.drop(); } };
  }
  const dir = mkdtempSync(join(tmpdir(), 'den-store-'));
  const store = await openStore({ sqlitePath: join(dir, 'den.sqlite') });
  return { store, close: async () => { await store.close(); rmSync(dir, { recursive: true, force: true }); } };
}
