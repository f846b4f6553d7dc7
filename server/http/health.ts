import type { FastifyInstance } from 'fastify';
import { sql } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { DenBase } from '../base.ts';

/** Liveness says the process serves HTTP; readiness also checks the store. */
export function registerHealth(app: FastifyInstance, context: Pick<DenBase, 'store'>): void {
  app.get('/healthz', { config: { auth: 'public' }, schema: { hide: true } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { config: { auth: 'public' }, schema: { hide: true } }, async () => {
    try {
      await sql`select 1`.execute(context.store.db);
    } catch (error) {
      throw new AppError('NOT_READY', 'The database is not reachable; the server is not ready.', { cause: error });
    }
    return { status: 'ready' };
  });
}
