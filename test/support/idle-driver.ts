import type { RuntimeDriver } from '../../server/runtimes/driver.ts';
import { PROCESS_CAPABILITIES } from '../../server/runtimes/process/driver.ts';

/**
 * A runtime that does nothing and reports every workspace running: for tests that are not about
 * the runtime and start the agent process themselves (as the process runtime does, through
 * agentCommand).
 */
export const idleDriver: RuntimeDriver = {
  name: 'process',
  capabilities: PROCESS_CAPABILITIES,
  agentDelivery: ['path'],
  resolveEndpoints: async () => ({}),
  start: async () => {},
  stop: async () => {},
  delete: async () => {},
  status: async () => ({ phase: 'running' }),
  serviceLogs: async () => (async function* () {})(),
  listWorkspaceIds: async () => [],
  close: async () => {},
};
