import { mkdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { ConfigError, DEFAULT_SSH_PORT, loadConfig, parseListen, type Config } from './config.ts';
import type { Logger } from 'pino';
import { createDen, type Den } from './den.ts';
import { buildServer } from './http/app.ts';
import { openStore } from './store/connect.ts';
import { systemClock } from './store/time.ts';
import { createDriver } from './runtimes/select.ts';
import { isSetupRequired } from './users/users.ts';
import { collectRelayedGarbageYoung } from '../protocol/heap.ts';

const USAGE = `Usage: den server [options]

Starts the den control plane.

Options:
  --listen HOST:PORT      address to listen on (default 127.0.0.1:7080, env DEN_LISTEN)
  --data-dir DIR          where den keeps its SQLite database and workspace homes (default ./.den, env DEN_DATA_DIR)
  --database-url URL      use PostgreSQL instead of SQLite (env DEN_DATABASE_URL)
  --runtime NAME          process (default), docker or kubernetes (env DEN_RUNTIME)
  --access-url URL        the URL agents and browsers reach this server at (env DEN_ACCESS_URL)
  --ssh-port PORT         the SSH gateway's port (default 2222, 0 for none; env DEN_SSH_PORT);
                          \`den ssh\` also works through the HTTP port without it
  --ssh-host HOST         the address the SSH port listens on (default: the host of --listen; env DEN_SSH_HOST)
  --apps-wildcard-domain DOMAIN  serve apps at <app|port>--<ws>--<owner>.DOMAIN (wildcard DNS to den; env DEN_APPS_WILDCARD_DOMAIN)
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
  collectRelayedGarbageYoung();
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
        'ssh-port': { type: 'string' },
        'ssh-host': { type: 'string' },
        'apps-wildcard-domain': { type: 'string' },
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
      sshPort: values['ssh-port'],
      sshHost: values['ssh-host'],
      appsWildcardDomain: values['apps-wildcard-domain'],
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

  // On a terminal a person reads the logs: one readable line each. Otherwise (a service
  // manager, a container, a pipe) JSON lines, as log collectors expect.
  const tty = process.stdout.isTTY === true;
  const log = pino(
    {
      level: config.logLevel,
      redact: { paths: ['req.headers.authorization', 'req.headers.cookie', '*.password', '*.token'], censor: '[redacted]' },
    },
    tty ? await prettyStream() : undefined,
  );
  mkdirSync(config.dataDir, { recursive: true });
  const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: config.dataDir });
  const driver = await createDriver(config, log);
  const den = createDen({ config, store, clock: systemClock, log, driver });
  const app = await buildServer(den);
  const { host, port } = parseListen(config.listen);
  try {
    await app.listen({ host, port });
    await listenForSsh(den, config, host, log);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const message = error instanceof SshListenError
      ? error.message
      : code === 'EADDRINUSE'
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
  if (tty) process.stdout.write(banner(config.accessUrl, await isSetupRequired(store.db)));

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

/** pino-pretty, loaded only for a terminal (it is not needed in production). */
async function prettyStream() {
  const { default: pretty } = await import('pino-pretty');
  return pretty({ colorize: true, translateTime: 'SYS:HH:MM:ss', ignore: 'pid,hostname', singleLine: true, sync: true });
}

/** What a person who just ran `npm start` needs: where to go, and how the first user is made. */
export function banner(accessUrl: string, setupRequired: boolean): string {
  const lines = [
    '',
    `  den is running at ${accessUrl}/`,
    '',
    ...(setupRequired
      ? [
          `  Open ${accessUrl}/ in a browser to create the first (owner) account,`,
          `  or from a shell: den login ${accessUrl} --first-user-username NAME --first-user-password PASSWORD`,
        ]
      : [`  Open ${accessUrl}/ in a browser to sign in, or from a shell: den login ${accessUrl}`]),
    '  Stop it with Ctrl+C.',
    '',
  ];
  return `${lines.join('\n')}\n`;
}

class SshListenError extends Error {}

/**
 * Opens the SSH port. When the default port is taken, den runs without it and says so (`den
 * ssh` still works through the HTTP port); a port the operator chose must be free.
 */
async function listenForSsh(den: Den, config: Config, listenHost: string, log: Logger): Promise<void> {
  if (config.sshPort === 0) return;
  const host = config.sshHost ?? listenHost;
  const port = config.sshPort ?? DEFAULT_SSH_PORT;
  try {
    await den.ssh.listen(host, port);
    log.info({ host, port }, 'the SSH gateway is listening');
  } catch (error) {
    const inUse = (error as NodeJS.ErrnoException).code === 'EADDRINUSE';
    if (inUse && config.sshPort === undefined) {
      return log.warn(`SSH port ${port} on ${host} is already in use: den runs without an SSH port (\`den ssh\` still works through the HTTP port). Pass --ssh-port to choose another.`);
    }
    throw new SshListenError(
      inUse
        ? `SSH port ${port} on ${host} is already in use. Stop the other process or pass --ssh-port with a free port (0 for none).`
        : `Cannot listen for SSH on ${host}:${port}: ${(error as Error).message}.`,
      { cause: error },
    );
  }
}
