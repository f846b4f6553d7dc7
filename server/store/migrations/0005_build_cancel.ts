import type { Kysely } from 'kysely';

// Frozen in time: imports nothing from the app, never changes after release.
//
// Who asked to cancel a build (a user id), and when. A queued build is canceled at once; a
// running one keeps running until the worker holding it sees the request (at once in the same
// process, at its next lease renewal on another replica) and aborts it.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('builds').addColumn('cancel_requested_by', 'text').execute();
  await db.schema.alterTable('builds').addColumn('cancel_requested_at', 'text').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('builds').dropColumn('cancel_requested_at').execute();
  await db.schema.alterTable('builds').dropColumn('cancel_requested_by').execute();
}
