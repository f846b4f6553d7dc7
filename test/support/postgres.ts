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
      await client.query(`drop database if exists ${name} with (force)`);
      await client.end();
    },
  };
}

/** The dialects a store test runs on: SQLite always, PostgreSQL when configured (in CI always). */
export const storeDialects: ('sqlite' | 'postgres')[] = postgresUrl ? ['sqlite', 'postgres'] : ['sqlite'];
if (!postgresUrl) {
  console.warn(`[skip] PostgreSQL store tests: ${postgresSkipReason}`);
}
