import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { existsSync, lstatSync, mkdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { AppError } from '../../../protocol/errors.ts';
import { agentArgv } from '../../agents/bundle.ts';
import type {
  DriverContext, RuntimeDriver, RuntimeStatus, ServiceEndpointRequest, ServiceEndpoints, ServiceLogLine, ServiceLogOptions,
  ServicePlan, WorkspaceIdentity, WorkspacePlan,
} from '../driver.ts';
import { isAlive, spawnTracked, stopGroup } from './processes.ts';
import { readNewLines, readTail, tailLines, waitUntilReady } from './readiness.ts';
import { bwrapArgs, bwrapAvailable, nodeRuntimePaths, SANDBOX_HOME } from './sandbox.ts';
import {
  allocatePort, assignedPorts, listStateDirs, readState, workspacePaths, writeState,
  type WorkspacePaths, type WorkspaceState,
} from './state.ts';

export interface ProcessDriverOptions {
  dataDir: string;
  log: Logger;
  /** fail instead of warning when bubblewrap is missing */
  requireSandbox: boolean;
  /** how long SIGTERM may take before SIGKILL (default 5 s) */
  stopGraceMs?: number;
  /** force the sandbox on or off (default: on when bwrap is installed); tests use it */
  sandbox?: boolean;
}

/** The package root: the agent's code is bound read-only into the sandbox from here. */
const PACKAGE_ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
const LOG_TAIL_LINES = 20;
/** how often a followed service log file is polled for new lines */
const LOG_POLL_MS = 200;

/**
 * The embedded runtime: a workspace is a home directory in the data dir with the agent running
 * as a child process there (in a bubblewrap sandbox when available); environment services with
 * a `command` are processes on assigned loopback ports. Processes are detached and tracked in a
 * state file, so they outlive a den restart and the next server can stop, delete and inspect them.
 */
export function createProcessDriver(options: ProcessDriverOptions): RuntimeDriver {
  const dataDir = resolve(options.dataDir);
  const graceMs = options.stopGraceMs ?? 5_000;
  const sandboxed = options.sandbox ?? bwrapAvailable();
  const locks = new Map<string, Promise<unknown>>();
  if (!sandboxed) {
    if (options.requireSandbox) {
      throw new AppError('RUNTIME_ERROR',
        'bubblewrap (bwrap) is not installed, and this server requires a sandbox for workspaces (requireSandbox). Install it (apt-get install bubblewrap) or turn requireSandbox off.');
    }
    options.log.warn('bubblewrap (bwrap) is not installed: workspaces of the process runtime run unsandboxed, as the server\'s user, and can read the data dir. Install bubblewrap (apt-get install bubblewrap) to isolate them.');
  }

  /** One verb at a time per workspace; ports are allocated under one global lock. */
  function serialize<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = locks.get(key) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(work);
    locks.set(key, next);
    void next.finally(() => { if (locks.get(key) === next) locks.delete(key); }).catch(() => undefined);
    return next;
  }

  function wrap(argv: string[], paths: WorkspacePaths, hostname: string, chdir?: string): string[] {
    if (!sandboxed) return argv;
    return [...bwrapArgs({
      home: paths.home, tmp: paths.tmp, hostname, chdir,
      readOnly: [PACKAGE_ROOT, ...nodeRuntimePaths()],
      hidden: [dataDir],
    }), ...argv];
  }

  function homeInside(paths: WorkspacePaths): string {
    return sandboxed ? SANDBOX_HOME : paths.home;
  }

  function baseEnv(paths: WorkspacePaths): Record<string, string> {
    return {
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
      LANG: process.env.LANG ?? 'C.UTF-8',
      HOME: homeInside(paths),
      TMPDIR: sandboxed ? '/tmp' : paths.tmp,
    };
  }

  async function ensurePorts(workspace: WorkspaceIdentity, services: readonly ServiceEndpointRequest[]): Promise<WorkspaceState> {
    return serialize('ports', async () => {
      const paths = workspacePaths(dataDir, workspace.id);
      const state = readState(paths);
      let changed = false;
      let taken: Set<number> | undefined;
      for (const request of services) {
        const byPort = (state.ports[request.service] ??= {});
        for (const port of request.ports) {
          if (byPort[String(port)] !== undefined) continue;
          taken ??= assignedPorts(dataDir);
          byPort[String(port)] = await allocatePort(taken);
          changed = true;
        }
      }
      if (changed) writeState(paths, state);
      return state;
    });
  }

  async function startService(plan: WorkspacePlan, service: ServicePlan, paths: WorkspacePaths, context: DriverContext): Promise<void> {
    const name = service.name;
    const state = readState(paths);
    const ports = state.ports[name] ?? {};
    const firstPort = service.ports[0] ? ports[String(service.ports[0].port)] : undefined;
    const env: Record<string, string> = {
      ...baseEnv(paths), ...plan.env, ...service.env,
      HOST: '127.0.0.1',
      ...(firstPort !== undefined ? { PORT: String(firstPort) } : {}),
    };
    for (const [declared, assigned] of Object.entries(ports)) env[`DEN_PORT_${declared}`] = String(assigned);
    const argv = service.command!;
    const specHash = hash({ argv, env, workdir: service.workdir });
    const existing = state.services[name];
    if (isAlive(existing) && existing!.specHash === specHash) {
      context.log(`Service ${name} is already running.`);
      return;
    }
    await stopGroup(existing, graceMs);
    const cwd = serviceCwd(service.workdir, paths);
    mkdirSync(cwd, { recursive: true });
    const chdir = cwd.startsWith(paths.home) ? join(SANDBOX_HOME, cwd.slice(paths.home.length)) : undefined;
    const logFile = join(paths.logs, `${name}.log`);
    context.log(`Starting service ${name}${firstPort !== undefined ? ` on port ${firstPort}` : ''}: ${argv.join(' ')}`);
    const startOffset = fileSize(logFile);
    const tracked = await spawnTracked({ argv: wrap(argv, paths, name, chdir), env, cwd, logFile, specHash });
    writeState(paths, { ...readState(paths), services: { ...readState(paths).services, [name]: tracked } });

    // The service's own output goes to the build log while it starts (this run's lines only).
    let offset = startOffset;
    const follow = setInterval(() => {
      const next = readNewLines(logFile, offset);
      offset = next.offset;
      for (const line of next.lines) context.log(`[${name}] ${line}`, 'stdout');
    }, 100);
    const result = await waitUntilReady({
      readiness: service.readiness, ports, env, cwd, signal: context.signal,
      argvFor: (command) => wrap(command, paths, name, chdir),
      alive: () => isAlive(tracked),
    }).finally(() => {
      clearInterval(follow);
      for (const line of readNewLines(logFile, offset).lines) context.log(`[${name}] ${line}`, 'stdout');
    });
    if (!result.ok) {
      const tail = tailLines(logFile, LOG_TAIL_LINES);
      throw new AppError('RUNTIME_ERROR',
        `Service ${name} failed to start: ${result.reason}. Check its command and readiness check in the template.`,
        { detail: tail.length > 0 ? `Last lines of its log:\n${tail.join('\n')}` : 'It wrote nothing to its log.' });
    }
    context.log(`Service ${name} is ready.`);
  }

  async function startAgent(plan: WorkspacePlan, paths: WorkspacePaths, context: DriverContext): Promise<void> {
    const state = readState(paths);
    const env: Record<string, string> = {
      ...baseEnv(paths), ...plan.env,
      DEN_AGENT_URL: plan.agent.url,
      DEN_AGENT_TOKEN: plan.agent.token,
    };
    const argv = agentArgv();
    const specHash = hash({ argv, env });
    if (isAlive(state.agent) && state.agent!.specHash === specHash) {
      context.log('The agent is already running.');
      return;
    }
    await stopGroup(state.agent, graceMs);
    const tracked = await spawnTracked({
      argv: wrap(argv, paths, plan.workspace.name), env, cwd: paths.home,
      logFile: join(paths.logs, 'agent.log'), specHash,
    });
    writeState(paths, { ...readState(paths), agent: tracked });
    context.log(`Started the agent (pid ${tracked.pid}${sandboxed ? ', sandboxed with bubblewrap' : ', not sandboxed'}).`);
  }

  async function stopAll(workspace: WorkspaceIdentity, context: DriverContext | undefined): Promise<void> {
    const paths = workspacePaths(dataDir, workspace.id);
    const state = readState(paths);
    if (!existsSync(paths.root)) return;
    if (isAlive(state.agent)) context?.log('Stopping the agent.');
    await stopGroup(state.agent, graceMs);
    // Reverse start order: dependents go before what they depend on.
    for (const name of Object.keys(state.services).reverse()) {
      if (isAlive(state.services[name])) context?.log(`Stopping service ${name}.`);
      await stopGroup(state.services[name], graceMs);
    }
    writeState(paths, { ports: readState(paths).ports, services: {} });
  }

  return {
    name: 'process',

    async resolveEndpoints(workspace, services) {
      const state = await ensurePorts(workspace, services);
      const endpoints: ServiceEndpoints = {};
      for (const request of services) {
        endpoints[request.service] = {};
        for (const port of request.ports) {
          endpoints[request.service][port] = { host: '127.0.0.1', port: state.ports[request.service][String(port)] };
        }
      }
      return endpoints;
    },

    start(plan, context) {
      return serialize(plan.workspace.id, async () => {
        const paths = workspacePaths(dataDir, plan.workspace.id);
        for (const dir of [paths.home, paths.tmp, paths.logs]) mkdirSync(dir, { recursive: true });
        await ensurePorts(plan.workspace, plan.services.map((s) => ({ service: s.name, ports: s.ports.map((p) => p.port) })));
        try {
          const wanted = new Set(plan.services.map((s) => s.name));
          for (const [name, tracked] of Object.entries(readState(paths).services)) {
            if (!wanted.has(name)) await stopGroup(tracked, graceMs);
          }
          for (const service of plan.services) {
            if (!service.command) {
              context.log(`Service ${service.name} has no command; the process runtime runs only services with a command, so it is skipped.`);
              continue;
            }
            await startService(plan, service, paths, context);
          }
          await startAgent(plan, paths, context);
        } catch (error) {
          // Nothing half-started is left behind: a failed start stops everything it began.
          await stopAll(plan.workspace, undefined);
          throw error;
        }
      });
    },

    stop(workspace, context) {
      return serialize(workspace.id, () => stopAll(workspace, context));
    },

    delete(workspace, context) {
      return serialize(workspace.id, async () => {
        await stopAll(workspace, context);
        rmSync(workspacePaths(dataDir, workspace.id).root, { recursive: true, force: true });
        context.log('Removed the home directory.');
      });
    },

    async status(workspace): Promise<RuntimeStatus> {
      const paths = workspacePaths(dataDir, workspace.id);
      if (!existsSync(paths.root)) return { phase: 'absent' };
      const state = readState(paths);
      if (!state.agent) return { phase: 'stopped' };
      if (!isAlive(state.agent)) {
        const tail = tailLines(join(paths.logs, 'agent.log'), 5);
        return { phase: 'failed', message: `The agent exited${tail.length ? `; its last output: ${tail.join(' | ')}` : ''}.` };
      }
      for (const [name, tracked] of Object.entries(state.services)) {
        if (!isAlive(tracked)) return { phase: 'failed', message: `Service ${name} exited; see ${join(paths.logs, `${name}.log`)}.` };
      }
      return { phase: 'running' };
    },

    async serviceLogs(workspace, service, options) {
      const paths = workspacePaths(dataDir, workspace.id);
      if (!existsSync(join(paths.logs, `${service}.log`))) {
        throw new AppError('WORKSPACE_NOT_RUNNING',
          `Service ${service} of ${workspace.ownerName}/${workspace.name} has not run yet, so it has no log. Start the workspace (den start ${workspace.ownerName}/${workspace.name}) and try again.`);
      }
      // The tail is read now, not at the first line asked for: following starts where it ends.
      return followServiceLog(paths, service, readTail(join(paths.logs, `${service}.log`), options.tail), options);
    },

    async listWorkspaceIds() {
      return listStateDirs(dataDir);
    },

    async close() {
      // Workspaces outlive the server by design; nothing to release.
    },
  };
}

/**
 * A service's log file (stdout and stderr together, every run appended; it survives stop): the
 * tail, then with `follow` new lines polled from the file while the service process runs.
 */
async function* followServiceLog(
  paths: WorkspacePaths,
  service: string,
  tail: { lines: string[]; offset: number },
  options: ServiceLogOptions,
): AsyncGenerator<ServiceLogLine> {
  const file = join(paths.logs, `${service}.log`);
  let { lines, offset } = tail;
  for (const line of lines) yield { stream: 'stdout', line };
  while (options.follow && !options.signal.aborted) {
    // Read once more after the process ended: its last lines may have landed meanwhile.
    const running = isAlive(readState(paths).services[service]);
    ({ lines, offset } = readNewLines(file, offset));
    for (const line of lines) yield { stream: 'stdout', line };
    if (!running) return;
    await sleep(LOG_POLL_MS, undefined, { signal: options.signal }).catch(() => undefined);
  }
}

/**
 * `~/app` and `app` are inside the home; an absolute workdir (a container path) falls back to it.
 * Plans check their paths, but den creates this directory with its own rights (root, often), and
 * versions pushed before those checks may be stored, so the result is checked here again: the
 * resolved path must stay in the home, and so must the real path of the part of it that exists
 * (workspace code can turn ~/app into a symlink to anywhere).
 */
function serviceCwd(workdir: string | undefined, paths: WorkspacePaths): string {
  if (!workdir || isAbsolute(workdir)) return paths.home;
  const home = resolve(paths.home);
  const cwd = resolve(home, workdir === '~' ? '.' : workdir.startsWith('~/') ? workdir.slice(2) : workdir);
  let existing = cwd;
  while (!lstatSync(existing, { throwIfNoEntry: false })) existing = dirname(existing);
  let real: string | undefined;
  try {
    real = realpathSync(existing);
  } catch {
    real = undefined; // a dangling symlink points nowhere den should create directories
  }
  const within = (path: string, root: string) => path === root || path.startsWith(root + sep);
  if (!within(cwd, home) || real === undefined || !within(real, realpathSync(home))) {
    throw new AppError('TEMPLATE_PATH_INVALID',
      `The service workdir ${JSON.stringify(workdir)} leads outside the workspace home. Use a directory inside the home, such as ~/app (and check that it is not a symlink that points elsewhere).`);
  }
  return cwd;
}

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

function hash(value: unknown): string {
  return createHash('sha256').update(JSON.stringify(value)).digest('hex').slice(0, 16);
}
