import type { Logger } from 'pino';
import type { Config } from './config.ts';
import type { RuntimeDriver } from './runtimes/driver.ts';
import type { Store } from './store/connect.ts';
import type { Clock } from './store/time.ts';

/**
 * What every part of den is built from: parsed configuration, the store, the clock, the logger
 * and the runtime driver. Domains take the slice of it they use (plus their own collaborators)
 * as plain arguments or plugin options; only the composition root (den.ts) sees all of den.
 * It sits below the domains so that naming it never imports one of them.
 */
export interface DenBase {
  config: Config;
  store: Store;
  clock: Clock;
  log: Logger;
  driver: RuntimeDriver;
}
