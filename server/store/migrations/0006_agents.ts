import { type Kysely, sql } from 'kysely';

// Frozen in time: imports nothing from the app, never changes after release.
//
// A workspace runs several agents: its own ('main') and one beside each environment service that
// asks for one (named after the service). Each agent has its own token and its own row here:
//  - state: the lifecycle state it last reported (starting, ready, start_error, shutting_down,
//    off), null until it reports;
//  - revision: the digest of the manifest it was started with;
//  - connected_at / disconnected_at: when its connection opened and closed (disconnected_at is
//    null while connected), written by whichever replica held it, so the reconciler reads them
//    through the store.
// The main agent's state and disconnection time move here from the workspace row.
// agent_tokens.agent_name scopes a token to one agent of its workspace.
export async function up(db: Kysely<any>, dialect: 'sqlite' | 'postgres'): Promise<void> {
  await db.schema
    .createTable('agents')
    .addColumn('workspace_id', 'text', (c) => c.notNull().references('workspaces.id'))
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('state', 'text')
    .addColumn('revision', 'text')
    .addColumn('connected_at', 'text')
    .addColumn('disconnected_at', 'text')
    .addPrimaryKeyConstraint('agents_pk', ['workspace_id', 'name'])
    .execute();
  await sql`insert into agents (workspace_id, name, state, disconnected_at)
    select id, 'main', agent_state, agent_disconnected_at from workspaces
    where agent_state is not null or agent_disconnected_at is not null`.execute(db);
  await db.schema.alterTable('workspaces').dropColumn('agent_state').execute();
  await db.schema.alterTable('workspaces').dropColumn('agent_disconnected_at').execute();
  await db.schema.alterTable('agent_tokens').addColumn('agent_name', 'text', (c) => c.notNull().defaultTo('main')).execute();

  // The workspace list shows the main agent's state: its writes bump the list generation (0002).
  if (dialect === 'sqlite') {
    for (const event of ['insert', 'update', 'delete']) {
      await sql.raw(`create trigger list_generation_agents_${event} after ${event} on agents begin update list_generation set n = n + 1 where id = 1; end`).execute(db);
    }
  } else {
    await sql.raw('create constraint trigger list_generation_agents after insert or update or delete on agents ' +
      'deferrable initially deferred for each row execute function list_generation_bump()').execute(db);
  }
}

export async function down(db: Kysely<any>, dialect: 'sqlite' | 'postgres'): Promise<void> {
  if (dialect === 'postgres') await sql.raw('drop trigger if exists list_generation_agents on agents').execute(db);
  else for (const event of ['insert', 'update', 'delete']) await sql.raw(`drop trigger if exists list_generation_agents_${event}`).execute(db);
  await db.schema.alterTable('agent_tokens').dropColumn('agent_name').execute();
  await db.schema.alterTable('workspaces').addColumn('agent_state', 'text').execute();
  await db.schema.alterTable('workspaces').addColumn('agent_disconnected_at', 'text').execute();
  await sql`update workspaces set
    agent_state = (select state from agents where agents.workspace_id = workspaces.id and agents.name = 'main'),
    agent_disconnected_at = (select disconnected_at from agents where agents.workspace_id = workspaces.id and agents.name = 'main')`.execute(db);
  await db.schema.dropTable('agents').execute();
}
