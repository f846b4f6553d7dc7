import { randomBytes } from 'node:crypto';
import pg from 'pg';

/**
 * PostgreSQL for tests: DEN_TEST_POSTGRES_URL points at a server where the role may create
 * databases (`test/services/postgres.sh` sets one up). Each caller gets a fresh database.
 */
export const postgresUrl = process.env.DEN_TEST_POSTGRES_URL;

export const postgresSkipReason = postgresUrl
  ? undefined
  : 'DEN_TEST_POSTGRES_URL is not set; run `bash test/services/postgres.sh` and export its URL to run the PostgreSQL half.';

export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  if (!postgresUrl) throw new Error(postgresSkipReason);
  const name = `den_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: postgresUrl });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(postgresUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const client = new pg.Client({ connectionString: postgresUrl });
      await client.connect();
      // pg's pool.end() resolves before its sockets are closed; forcing the drop while a backend
      // is still saying goodbye makes that client emit an unhandled 57P01 error in the test.
      await waitForNoSessions(client, name);
      await client.query(`drop database if exists ${name} with (force)`);
      await client.end();
    },
  };
}

/** How long drop() waits for the test's own connections to close before forcing them. */
const SESSIONS_CLOSE_TIMEOUT_MS = 5_000;

async function waitForNoSessions(client: pg.Client, database: string): Promise<void> {
  const deadline = Date.now() + SESSIONS_CLOSE_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const { rows } = await client.query('select count(*)::int as n from pg_stat_activity where datname = $1', [database]);
    if (rows[0].n === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** The dialects a store test runs on: SQLite always, PostgreSQL when configured (in CI always). */
export const storeDialects: ('sqlite' | 'postgres')[] = postgresUrl ? ['sqlite', 'postgres'] : ['sqlite'];
if (!postgresUrl) {
  console.warn(`[skip] PostgreSQL store tests: ${postgresSkipReason}`);
}
