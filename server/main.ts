import { mkdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { ConfigError, loadConfig, parseListen, type Config } from './config.ts';
import { createDen } from './den.ts';
import { buildServer } from './http/app.ts';
import { openStore } from './store/connect.ts';
import { systemClock } from './store/time.ts';
import { createDriver } from './runtimes/select.ts';

const USAGE = `Usage: den server [options]

Starts the den control plane.

Options:
  --listen HOST:PORT      address to listen on (default 127.0.0.1:7080, env DEN_LISTEN)
  --data-dir DIR          where den keeps its SQLite database and workspace homes (default ./.den, env DEN_DATA_DIR)
  --database-url URL      use PostgreSQL instead of SQLite (env DEN_DATABASE_URL)
  --runtime NAME          process (default), docker or kubernetes (env DEN_RUNTIME)
  --access-url URL        the URL agents and browsers reach this server at (env DEN_ACCESS_URL)
  --log-level LEVEL       fatal, error, warn, info (default), debug, trace (env DEN_LOG_LEVEL)
  --kube-context NAME     kubernetes runtime: the kubeconfig context to use (env DEN_KUBE_CONTEXT;
                          the kubeconfig is DEN_KUBECONFIG, KUBECONFIG or ~/.kube/config, or in-cluster)
  --require-sandbox       process runtime: refuse to start without bubblewrap instead of running
                          workspaces unisolated (env DEN_REQUIRE_SANDBOX=true)
  --config FILE           a YAML or JSON file with any of these settings (env DEN_CONFIG)
  -h, --help              show this help
`;

/** `den server`: parse configuration once, open the store, start listening, shut down gracefully. */
export async function runServer(argv: string[]): Promise<void> {
  let config: Config;
  try {
    const { values } = parseArgs({
      args: argv,
      options: {
        listen: { type: 'string' },
        'data-dir': { type: 'string' },
        'database-url': { type: 'string' },
        runtime: { type: 'string' },
        'access-url': { type: 'string' },
        'log-level': { type: 'string' },
        'require-sandbox': { type: 'boolean' },
        'kube-context': { type: 'string' },
        config: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
    if (values.help) {
      process.stdout.write(USAGE);
      return;
    }
    config = loadConfig({
      listen: values.listen,
      dataDir: values['data-dir'],
      databaseUrl: values['database-url'],
      runtime: values.runtime,
      accessUrl: values['access-url'],
      logLevel: values['log-level'],
      requireSandbox: values['require-sandbox'],
      kubeContext: values['kube-context'],
      config: values.config,
    });
  } catch (error) {
    const message = error instanceof ConfigError ? error.message : `${(error as Error).message}. Run \`den server --help\`.`;
    process.stderr.write(`den server: ${message}\n`);
    process.exitCode = 2;
    return;
  }

  const log = pino({
    level: config.logLevel,
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', '*.password', '*.token'], censor: '[redacted]' },
  });
  mkdirSync(config.dataDir, { recursive: true });
  const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  const driver = await createDriver(config, log);
  const app = await buildServer(createDen({ config, store, clock: systemClock, log, driver }));
  const { host, port } = parseListen(config.listen);
  try {
    await app.listen({ host, port });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const message =
      code === 'EADDRINUSE'
        ? `Port ${port} on ${host} is already in use. Stop the other process or pass --listen with a free port.`
        : `Cannot listen on ${config.listen}: ${(error as Error).message}.`;
    log.fatal(message);
    process.stderr.write(`den server: ${message}\n`);
    await app.close();
    await driver.close();
    await store.close();
    process.exitCode = 1;
    return;
  }
  log.info({ url: config.accessUrl, runtime: config.runtime, store: store.dialect }, 'den is listening');

  let closing = false;
  const shutdown = async (signal: string) => {
    if (closing) {
      log.warn(`${signal} again: exiting immediately`);
      process.exit(1);
    }
    closing = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      log.error('shutdown took longer than 10 s; exiting');
      process.exit(1);
    }, 10_000);
    force.unref();
    await app.close();
    await driver.close();
    await store.close();
    clearTimeout(force);
  };
  process.once('SIGINT', () => void shutdown('SIGINT'));
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
}
