/**
 * Whether a database error is a unique-constraint violation, on either dialect. The domain turns
 * it into a coded 409; checking before inserting is not enough when two requests race.
 */
export function isUniqueViolation(error: unknown): boolean {
  const e = error as { code?: unknown; errcode?: unknown; message?: unknown } | null;
  if (!e) return false;
  // pg: SQLSTATE 23505; node:sqlite: SQLITE_CONSTRAINT_UNIQUE / "UNIQUE constraint failed"
  if (e.code === '23505') return true;
  return typeof e.message === 'string' && e.message.includes('UNIQUE constraint failed');
}
