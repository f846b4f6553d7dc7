import { UsageError } from './errors.ts';

/** `k=v` pairs into an object; a pair without `=` or with an empty key is a usage error. */
export function parseParams(pairs: readonly string[], flag: string): Record<string, string> {
  const params: Record<string, string> = {};
  for (const pair of pairs) {
    const equals = pair.indexOf('=');
    if (equals <= 0) {
      throw new UsageError(`${flag} '${pair}' is not KEY=VALUE. Write it like ${flag} name=value.`);
    }
    params[pair.slice(0, equals)] = pair.slice(equals + 1);
  }
  return params;
}
