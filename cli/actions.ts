/** commander glue shared by the command tree: lazy actions and option parsers. */
import { InvalidArgumentError } from 'commander';

/** An action that imports `module` and calls its export `name` with the positional arguments and options. */
export function lazy(load: () => Promise<Record<string, unknown>>, name: string) {
  return async (...args: unknown[]): Promise<void> => {
    const module = await load();
    const action = module[name] as (...actionArgs: unknown[]) => Promise<void>;
    // commander passes (...arguments, options, command); commands need no Command object.
    await action(...args.slice(0, -1));
  };
}

export function collectParam(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function parsePositiveInt(value: string): number {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1) {
    throw new InvalidArgumentError(`'${value}' is not a positive whole number.`);
  }
  return number;
}

