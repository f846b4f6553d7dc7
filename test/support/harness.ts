import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { loadConfig, type Config } from '../../server/config.ts';
import { buildServer } from '../../server/http/app.ts';
import { createDen, type Den, type DenOptions } from '../../server/den.ts';
import { openStore, type Store } from '../../server/store/connect.ts';
import { systemClock, type Clock } from '../../server/store/time.ts';
import type { RuntimeDriver } from '../../server/runtimes/driver.ts';
import type { LoginLimits } from '../../server/auth/login-limits.ts';
import { createTestDatabase } from './postgres.ts';

export interface TestServer {
  app: FastifyInstance;
  /** the server's parts (agent hub, builds, driver...), for what a test checks beside the API */
  den: Den;
  store: Store;
  config: Config;
  dataDir: string;
  /** the base URL when started with `listen: true` */
  url?: string;
  /** the SSH gateway's port when started with `ssh: true` */
  sshPort?: number;
  close(): Promise<void>;
}

export interface TestServerOptions {
  dialect?: 'sqlite' | 'postgres';
  /** a driver to use; defaults to the process driver in the test's data dir */
  driver?: (config: Config) => RuntimeDriver | Promise<RuntimeDriver>;
  clock?: Clock;
  /** listen on 127.0.0.1:0 (needed by agents and real network paths) */
  listen?: boolean;
  /** with `listen`: this port instead of a free one (to restart a server where its agents will look for it) */
  port?: number;
  startWorkers?: boolean;
  /** an existing data dir (to restart a server over the same state) */
  dataDir?: string;
  /** reuse a database (postgres URL) instead of creating one */
  databaseUrl?: string;
  config?: Record<string, unknown>;
  /** login limits with smaller numbers than den's defaults, or to reach their password gate */
  loginLimits?: LoginLimits;
  /** the reconcile loop's timings and restart bounds */
  reconcile?: DenOptions['reconcile'];
  /** with `listen`: open the SSH gateway on a free loopback port */
  ssh?: boolean;
  /** the SSH gateway's per-user limits */
  sshLimits?: DenOptions['sshLimits'];
}

/**
 * The process runtime without the sandbox, for tests about something other than isolation (the
 * sandbox has its own tests): a worktree's node_modules may be a link the sandbox does not mount.
 */
export async function unsandboxedProcessDriver(config: Config): Promise<RuntimeDriver> {
  const { createProcessDriver } = await import('../../server/runtimes/process/driver.ts');
  return createProcessDriver({ dataDir: config.dataDir, log: pino({ level: 'silent' }), requireSandbox: false, sandbox: false });
}

/** Starts a real den server over a fresh store (SQLite file or a new PostgreSQL database). */
export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const ownsDir = !options.dataDir;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'den-test-'));
  const pgdb = options.dialect === 'postgres' && !options.databaseUrl ? await createTestDatabase() : undefined;
  const databaseUrl = options.databaseUrl ?? pgdb?.url;
  let config = loadConfig({ dataDir, databaseUrl, logLevel: 'silent', listen: '127.0.0.1:0', ...options.config }, {});
  const store = await openStore({ databaseUrl, dataDir });
  const log = pino({ level: process.env.DEN_TEST_LOG ?? 'silent' });

  // The agent must know the real port, so listen first when asked, then fix the access URL.
  let driver: RuntimeDriver;
  let url: string | undefined;
  if (options.listen) {
    const net = await import('node:net');
    const port = options.port ?? await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, '127.0.0.1', () => {
        const address = probe.address() as { port: number };
        probe.close(() => resolve(address.port));
      });
    });
    config = loadConfig({ ...config, listen: `127.0.0.1:${port}`, accessUrl: undefined, replicaUrl: undefined }, {});
    url = config.accessUrl;
  }
  if (options.driver) {
    driver = await options.driver(config);
  } else {
    const { createProcessDriver } = await import('../../server/runtimes/process/driver.ts');
    driver = createProcessDriver({ dataDir: config.dataDir, log, requireSandbox: false });
  }
  const den = createDen({
    config,
    store,
    clock: options.clock ?? systemClock,
    log,
    driver,
    startWorkers: options.startWorkers,
    loginLimits: options.loginLimits,
    reconcile: options.reconcile,
    sshLimits: options.sshLimits,
  });
  const app = await buildServer(den);
  let sshPort: number | undefined;
  if (options.listen) {
    const port = Number(new URL(url!).port);
    await app.listen({ host: '127.0.0.1', port });
    if (options.ssh) sshPort = await den.ssh.listen('127.0.0.1', 0);
  } else {
    await app.ready();
  }
  return {
    app,
    den,
    store,
    config,
    dataDir,
    url,
    sshPort,
    async close() {
      await app.close();
      // Workspaces outlive a server by design (process runtime included); a test that owns its
      // data dir removes them with it, so no agent or service process outlives the test.
      if (ownsDir) await deleteAllWorkspaces(driver);
      await driver.close();
      await store.close();
      await pgdb?.drop();
      if (ownsDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

async function deleteAllWorkspaces(driver: RuntimeDriver): Promise<void> {
  const context = { log: () => {}, signal: new AbortController().signal };
  for (const id of await driver.listWorkspaceIds().catch(() => [] as string[])) {
    await driver.delete({ id, name: id, ownerId: '', ownerName: '' }, context).catch(() => undefined);
  }
}
