import type { Compilable, CompiledQuery, Kysely } from 'kysely';
import type { Database } from './schema.ts';

/**
 * Compiles a query once per Kysely instance and afterwards only binds new values. Kysely builds
 * and compiles the query tree anew on every call, and for the list join that cost nearly as
 * much CPU as SQLite takes to run it (~0.15 ms). `build` receives `placeholders` in place of the values:
 * each must be a value the query never holds otherwise, and each must reach the SQL as a bound
 * parameter (checked at the first compile).
 */
export function compiledOnce<Args extends unknown[], Row>(
  build: (db: Kysely<Database>, ...values: Args) => Compilable<Row>,
  placeholders: Args,
): (db: Kysely<Database>, ...values: Args) => CompiledQuery<Row> {
  const compiled = new WeakMap<Kysely<Database>, { query: CompiledQuery<Row>; slots: number[] }>();
  return (db, ...values) => {
    let entry = compiled.get(db);
    if (!entry) {
      const query = build(db, ...placeholders).compile();
      const slots = query.parameters.map((parameter) => placeholders.indexOf(parameter));
      if (placeholders.some((_, i) => !slots.includes(i))) {
        throw new Error(`A placeholder did not become a bound parameter of: ${query.sql}`);
      }
      entry = { query, slots };
      compiled.set(db, entry);
    }
    const { query, slots } = entry;
    return { ...query, parameters: slots.map((slot, i) => (slot === -1 ? query.parameters[i] : values[slot])) };
  };
}
