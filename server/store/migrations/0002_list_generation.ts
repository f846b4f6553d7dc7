import { type Kysely, sql } from 'kysely';

// Frozen in time: imports nothing from the app, never changes after release.
//
// A counter bumped, in the writer's own transaction, by every insert, update and delete of a
// table the workspace list reads. server/workspaces/list-cache.ts keys cached list pages by it,
// so no write path (routes, build workers, agent state updates, another replica, a script
// writing the database) can leave a stale page behind. (TRUNCATE does not fire row triggers;
// den never truncates these tables.)
//
// PostgreSQL: the bump is a deferred constraint trigger, so it runs at COMMIT, once per
// transaction. The counter row is then the last lock a transaction takes and is held only while
// it commits: concurrent writers queue briefly at commit but cannot deadlock on it.
const TABLES = ['workspaces', 'builds', 'users', 'templates', 'template_versions'];

export async function up(db: Kysely<any>, dialect: 'sqlite' | 'postgres'): Promise<void> {
  await sql`create table list_generation (id integer primary key check (id = 1), n bigint not null)`.execute(db);
  await sql`insert into list_generation (id, n) values (1, 0)`.execute(db);
  if (dialect === 'sqlite') {
    for (const table of TABLES) {
      for (const event of ['insert', 'update', 'delete']) {
        await sql.raw(
          `create trigger list_generation_${table}_${event} after ${event} on ${table} ` +
          'begin update list_generation set n = n + 1 where id = 1; end',
        ).execute(db);
      }
    }
    return;
  }
  // Constraint triggers are per row; the transaction-local setting makes the bump once per transaction.
  await sql.raw(`
    create function list_generation_bump() returns trigger language plpgsql as $$
    begin
      if current_setting('den.list_generation_bumped', true) is distinct from 'on' then
        perform set_config('den.list_generation_bumped', 'on', true);
        update list_generation set n = n + 1 where id = 1;
      end if;
      return null;
    end $$`).execute(db);
  for (const table of TABLES) {
    await sql.raw(
      `create constraint trigger list_generation_${table} after insert or update or delete on ${table} ` +
      'deferrable initially deferred for each row execute function list_generation_bump()',
    ).execute(db);
  }
}

export async function down(db: Kysely<any>, dialect: 'sqlite' | 'postgres'): Promise<void> {
  for (const table of TABLES) {
    if (dialect === 'postgres') await sql.raw(`drop trigger if exists list_generation_${table} on ${table}`).execute(db);
    else for (const event of ['insert', 'update', 'delete']) await sql.raw(`drop trigger if exists list_generation_${table}_${event}`).execute(db);
  }
  if (dialect === 'postgres') await sql`drop function if exists list_generation_bump()`.execute(db);
  await sql`drop table if exists list_generation`.execute(db);
}
