import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { existsSync, lstatSync, mkdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve, sep } from 'node:path';
import type { Logger } from 'pino';
import { AppError } from '../../../protocol/errors.ts';
import {
  secretsOf,
  type AgentPlan, type DriverContext, type RuntimeDriver, type RuntimeStatus, type ServiceEndpointRequest, type ServiceEndpoints, type ServiceLogLine,
  type ServiceLogOptions, type ServicePlan, type StartContext, type WorkspaceIdentity, type WorkspacePlan,
} from '../driver.ts';
import type { RuntimeCapabilities } from '../capabilities.ts';
import { createAgentSockets } from './agent-sockets.ts';
import { createProcessObserver } from './observer.ts';
import { capWorkspaceLogs, DEFAULT_LOG_FILE_LIMITS, LOG_CAP_INTERVAL_MS, type LogFileLimits } from './log-files.ts';
import { isAlive, spawnTracked, stopGroup } from './processes.ts';
import { readNewLines, readTail, tailLines, waitUntilReady } from './readiness.ts';
import { bwrapAvailable } from './sandbox.ts';
import {
  allocatePort, allocateUid, assignedPorts, listStateDirs, readState, workspacePaths, writeState,
  type WorkspacePaths, type WorkspaceState,
} from './state.ts';
import { createWorkspaceSandbox } from './workspace-sandbox.ts';

export interface ProcessDriverOptions {
  dataDir: string;
  log: Logger;
  /** fail instead of warning when bubblewrap is missing */
  requireSandbox: boolean;
  /** how long SIGTERM may take before SIGKILL (default 5 s) */
  stopGraceMs?: number;
  /** force the sandbox on or off (default: on when bwrap is installed); tests use it */
  sandbox?: boolean;
  /** how large a service's or the agent's log file may grow (default DEFAULT_LOG_FILE_LIMITS) */
  logFileLimits?: LogFileLimits;
}

const LOG_TAIL_LINES = 20;
/** how often a followed service log file is polled for new lines */
const LOG_POLL_MS = 200;

/**
 * The embedded runtime: a workspace is a home directory in the data dir with the agent running
 * as a child process there (in a bubblewrap sandbox when available); environment services with
 * a `command` are processes on assigned loopback ports. Processes are detached and tracked in a
 * state file, so they outlive a den restart and the next server can stop, delete and inspect them.
 *
 * Sandboxed, every process of a workspace joins the user and network namespaces of the
 * workspace's holder (holder.ts): its own loopback and nothing else, as an unprivileged user.
 * The agent reaches den through a unix socket in a directory mounted into the sandbox.
 */
export function createProcessDriver(options: ProcessDriverOptions): RuntimeDriver {
  const dataDir = resolve(options.dataDir);
  const graceMs = options.stopGraceMs ?? 5_000;
  const sandboxed = options.sandbox ?? bwrapAvailable();
  /** as root, each workspace runs as an unprivileged uid of its own (else as den's uid, mapped) */
  const asRoot = process.getuid?.() === 0;
  const locks = new Map<string, Promise<unknown>>();
  const agentSockets = createAgentSockets();
  const sandbox = createWorkspaceSandbox({ dataDir, sandboxed, asRoot });
  const observer = createProcessObserver({ dataDir, busy: (workspaceId) => locks.has(workspaceId) });
  if (!sandboxed) {
    if (options.requireSandbox) {
      throw new AppError('RUNTIME_ERROR',
        'bubblewrap (bwrap) is not installed, and this server requires a sandbox for workspaces (requireSandbox). Install it (apt-get install bubblewrap) or turn requireSandbox off.');
    }
    options.log.warn(UNSANDBOXED_WARNING);
  }

  const logCap = setInterval(() => capWorkspaceLogs(dataDir, options.logFileLimits ?? DEFAULT_LOG_FILE_LIMITS,
    (file, error) => options.log.warn({ err: error, file }, 'could not cut a workspace log file down to its limit')), LOG_CAP_INTERVAL_MS);
  logCap.unref();

  /** One verb at a time per workspace; ports and uids are allocated under one global lock. */
  function serialize<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = locks.get(key) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(work);
    locks.set(key, next);
    void next.finally(() => { if (locks.get(key) === next) locks.delete(key); }).catch(() => undefined);
    return next;
  }

  /** Before any process of the workspace starts: its uid (den as root) and its sandbox. */
  async function prepareSandbox(workspace: WorkspaceIdentity, paths: WorkspacePaths, context: DriverContext): Promise<void> {
    const uid = sandboxed && asRoot ? await serialize('allocations', async () => {
      const state = readState(paths);
      if (state.uid === undefined) writeState(paths, { ...state, uid: allocateUid(dataDir) });
      return readState(paths).uid!;
    }) : undefined;
    await sandbox.prepare(paths, uid, async () => {
      const state = readState(paths);
      if (!isAlive(state.agent) && !Object.values(state.services).some(isAlive)) return;
      context.log('The workspace\'s processes run outside its network sandbox; restarting them in a new one.');
      await stopProcesses(workspace, undefined);
    });
  }

  function baseEnv(paths: WorkspacePaths): Record<string, string> {
    return {
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
      LANG: process.env.LANG ?? 'C.UTF-8',
      ...sandbox.env(paths),
    };
  }

  async function ensurePorts(workspace: WorkspaceIdentity, services: readonly ServiceEndpointRequest[]): Promise<WorkspaceState> {
    return serialize('allocations', async () => {
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

  /** A service's environment (its agent gets the same, so an exec through it sees what the service sees). */
  function serviceEnv(plan: WorkspacePlan, service: ServicePlan, paths: WorkspacePaths): Record<string, string> {
    const ports = readState(paths).ports[service.name] ?? {};
    const firstPort = service.ports[0] ? ports[String(service.ports[0].port)] : undefined;
    const env: Record<string, string> = {
      ...baseEnv(paths), ...plan.env, ...service.env,
      HOST: '127.0.0.1',
      ...(firstPort !== undefined ? { PORT: String(firstPort) } : {}),
    };
    for (const [declared, assigned] of Object.entries(ports)) env[`DEN_PORT_${declared}`] = String(assigned);
    return env;
  }

  async function startService(plan: WorkspacePlan, service: ServicePlan, paths: WorkspacePaths, context: DriverContext): Promise<void> {
    const name = service.name;
    const state = readState(paths);
    const ports = state.ports[name] ?? {};
    const firstPort = service.ports[0] ? ports[String(service.ports[0].port)] : undefined;
    const env = serviceEnv(plan, service, paths);
    const argv = service.command!;
    const specHash = hash({ argv, env, workdir: service.workdir });
    const existing = state.services[name];
    if (isAlive(existing) && existing!.specHash === specHash) {
      context.log(`Service ${name} is unchanged and running: skipped.`);
      return;
    }
    await stopGroup(existing, graceMs);
    const { cwd, chdir } = sandbox.workdir(paths, serviceCwd(service.workdir, paths));
    const logFile = join(paths.logs, `${name}.log`);
    context.log(`Starting service ${name}${firstPort !== undefined ? ` on port ${firstPort}` : ''}: ${argv.join(' ')}`);
    const startOffset = fileSize(logFile);
    const tracked = await spawnTracked({
      argv: sandbox.wrap(argv, paths, name, { chdir }), env, cwd, logFile, specHash, onExit: (code, signal) => observer.recordExit(tracked.pid, code, signal),
    });
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
      argvFor: (command) => sandbox.wrap(command, paths, name, { chdir }),
      inNetwork: sandbox.probes(paths),
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

  /**
   * Starts one agent (the workspace's, or the one beside a service) unless it runs with the same
   * spec already. A service's agent runs in the workspace's sandbox like the service itself, in
   * the service's environment and working directory, and dials the same agent socket: its token
   * says which agent it is.
   */
  async function startAgent(
    plan: WorkspacePlan, agentPlan: AgentPlan, paths: WorkspacePaths, context: StartContext,
    where: { env: Record<string, string>; cwd: string; chdir?: string; hostname: string },
  ): Promise<void> {
    if (agentPlan.delivery.kind !== 'path') {
      throw new Error(`The process runtime cannot deliver the agent by ${agentPlan.delivery.kind}; the planner chose a way it does not offer (a bug in den).`);
    }
    const service = agentPlan.name === plan.agent.name ? undefined : agentPlan.name;
    const state = readState(paths);
    const running = service ? state.serviceAgents[service] : state.agent;
    // Sandboxed, the agent has no route to den's address: it dials the socket den listens on.
    const socket = await agentSockets.listen(plan.workspace.id, paths, state.uid);
    const env: Record<string, string> = {
      ...where.env,
      DEN_AGENT_URL: agentPlan.url,
      ...(socket ? { DEN_AGENT_SOCKET: sandbox.agentSocket(socket) } : {}),
    };
    const agent = sandbox.agent();
    // Secrets stay out of the hash: a running agent keeps its token across re-applies. (The main
    // agent's hash is what it was before service agents existed, so an upgrade restarts nothing.)
    const specHash = hash({ argv: agent.argv, env, bundle: agent.hash, revision: agentPlan.revision, ...(service ? { cwd: where.cwd } : {}) });
    const who = service ? `The agent of service ${service}` : 'The agent';
    if (isAlive(running) && running!.specHash === specHash) {
      context.log(`${who} is already running.`);
      return;
    }
    await stopGroup(running, graceMs);
    for (const secret of secretsOf(plan, agentPlan.name)) env[secret.env] = await context.secret(secret.name);
    const tracked = await spawnTracked({
      argv: sandbox.wrap(agent.argv, paths, where.hostname, { mounts: agent.mounts, chdir: where.chdir }), env, cwd: where.cwd,
      logFile: join(paths.logs, service ? `${service}.agent.log` : 'agent.log'), specHash, onExit: (code, signal) => observer.recordExit(tracked.pid, code, signal),
    });
    const latest = readState(paths);
    writeState(paths, service ? { ...latest, serviceAgents: { ...latest.serviceAgents, [service]: tracked } } : { ...latest, agent: tracked });
    context.log(`Started ${service ? `the agent of service ${service}` : 'the agent'} (pid ${tracked.pid}${sandboxed ? ', sandboxed with bubblewrap' : ', not sandboxed'}).`);
  }

  function startServiceAgent(plan: WorkspacePlan, service: ServicePlan, paths: WorkspacePaths, context: StartContext): Promise<void> {
    const { cwd, chdir } = sandbox.workdir(paths, serviceCwd(service.workdir, paths));
    return startAgent(plan, service.agent!, paths, context, { env: serviceEnv(plan, service, paths), cwd, chdir, hostname: service.name });
  }

  /** Stops the agent and the services; the holder (and so the network) stays. */
  async function stopProcesses(workspace: WorkspaceIdentity, context: DriverContext | undefined): Promise<void> {
    const paths = workspacePaths(dataDir, workspace.id);
    const state = readState(paths);
    if (!existsSync(paths.root)) return;
    if (isAlive(state.agent)) context?.log('Stopping the agent.');
    await stopGroup(state.agent, graceMs);
    for (const [name, tracked] of Object.entries(state.serviceAgents)) {
      if (isAlive(tracked)) context?.log(`Stopping the agent of service ${name}.`);
      await stopGroup(tracked, graceMs);
    }
    // Reverse start order: dependents go before what they depend on.
    for (const name of Object.keys(state.services).reverse()) {
      if (isAlive(state.services[name])) context?.log(`Stopping service ${name}.`);
      await stopGroup(state.services[name], graceMs);
    }
    writeState(paths, { ...readState(paths), agent: undefined, services: {}, serviceAgents: {} });
  }

  /** Stops everything, the holder of the namespaces last; keeps the ports and the uid. */
  async function stopAll(workspace: WorkspaceIdentity, context: DriverContext | undefined): Promise<void> {
    await stopProcesses(workspace, context);
    const paths = workspacePaths(dataDir, workspace.id);
    if (!existsSync(paths.root)) return;
    await agentSockets.close(workspace.id);
    await stopGroup(readState(paths).network, graceMs);
    writeState(paths, { ...readState(paths), network: undefined });
  }

  const driver: RuntimeDriver = {
    name: 'process',
    isolation: sandboxed ? { sandboxed: true } : { sandboxed: false, warning: UNSANDBOXED_WARNING },
    capabilities: PROCESS_CAPABILITIES,
    // the server's own bundle directory, bound read-only into the sandbox (workspace-sandbox.ts)
    agentDelivery: Object.freeze(['path'] as const),

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
        for (const dir of [paths.home, paths.tmp, paths.logs, paths.socketDir]) mkdirSync(dir, { recursive: true });
        await ensurePorts(plan.workspace, plan.services.map((s) => ({ service: s.name, ports: s.ports.map((p) => p.port) })));
        logIgnoredFeatures(plan, context);
        try {
          await prepareSandbox(plan.workspace, paths, context);
          const wanted = new Set(plan.services.map((s) => s.name));
          const wantedAgents = new Set(plan.services.flatMap((s) => (s.agent ? [s.name] : [])));
          for (const [name, tracked] of Object.entries(readState(paths).serviceAgents)) {
            if (!wantedAgents.has(name)) await stopGroup(tracked, graceMs);
          }
          for (const [name, tracked] of Object.entries(readState(paths).services)) {
            if (!wanted.has(name)) await stopGroup(tracked, graceMs);
          }
          // A service (or agent) gone from the plan is no longer tracked (so its end is not reported as a crash).
          const state = readState(paths);
          writeState(paths, {
            ...state,
            services: Object.fromEntries(Object.entries(state.services).filter(([name]) => wanted.has(name))),
            serviceAgents: Object.fromEntries(Object.entries(state.serviceAgents).filter(([name]) => wantedAgents.has(name))),
          });
          for (const service of plan.services) {
            if (!service.command) {
              context.log(`Service ${service.name} has no command; the process runtime runs only services with a command, so it is skipped.`);
              continue;
            }
            await startService(plan, service, paths, context);
            if (service.agent) await startServiceAgent(plan, service, paths, context);
          }
          await startAgent(plan, plan.agent, paths, context, { env: { ...baseEnv(paths), ...plan.env }, cwd: paths.home, hostname: plan.workspace.name });
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
      const problem = sandbox.problem(paths, state);
      if (problem) return { phase: 'failed', message: problem };
      if (!isAlive(state.agent)) {
        const tail = tailLines(join(paths.logs, 'agent.log'), 5);
        return { phase: 'failed', message: `The agent exited${tail.length ? `; its last output: ${tail.join(' | ')}` : ''}.` };
      }
      for (const [name, tracked] of Object.entries(state.services)) {
        if (!isAlive(tracked)) return { phase: 'failed', message: `Service ${name} exited; see ${join(paths.logs, `${name}.log`)}.` };
      }
      for (const [name, tracked] of Object.entries(state.serviceAgents)) {
        if (!isAlive(tracked)) return { phase: 'failed', message: `The agent of service ${name} exited; see ${join(paths.logs, `${name}.agent.log`)}.` };
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

    async collectGarbage(exists) {
      const removed: string[] = [];
      for (const id of listStateDirs(dataDir)) {
        if (await exists(id)) continue;
        await driver.delete({ id, name: id, ownerId: '', ownerName: '' }, { log: () => {}, signal: new AbortController().signal });
        options.log.info({ workspaceId: id }, 'removed the processes and home directory of a workspace that no longer exists');
        removed.push(id);
      }
      return removed;
    },

    observe(onEvent) {
      return observer.observe(onEvent);
    },

    async serveAgents(accept) {
      const running = listStateDirs(dataDir)
        .map((workspaceId) => ({ workspaceId, paths: workspacePaths(dataDir, workspaceId) }))
        .map((entry) => ({ ...entry, state: readState(entry.paths) }))
        .filter((entry) => isAlive(entry.state.agent));
      await agentSockets.serve(accept, running.map(({ workspaceId, paths, state }) => ({ workspaceId, paths, uid: state.uid })),
        (workspaceId, error) => options.log.warn({ workspaceId, err: error },
          'Cannot listen on the agent socket of a running workspace; its agent stays disconnected until the workspace is restarted.'));
    },

    async takeOverAgents(workspaceIds) {
      for (const workspaceId of workspaceIds) {
        if (!listStateDirs(dataDir).includes(workspaceId)) continue;
        const paths = workspacePaths(dataDir, workspaceId);
        const state = readState(paths);
        if (!isAlive(state.agent)) continue;
        await agentSockets.listen(workspaceId, paths, state.uid).catch((error: Error) => options.log.warn({ workspaceId, err: error },
          'Cannot take over the agent socket of a workspace whose replica died; its agent stays disconnected until the workspace is restarted.'));
      }
    },

    async close() {
      // Workspaces outlive the server by design: only the log file check stops and the agent
      // sockets are released (the next server listens on them again, and the agents reconnect).
      clearInterval(logCap);
      await agentSockets.closeAll();
    },
  };
  return driver;
}

/**
 * Services are processes here (no images); resource limits and service volumes are accepted and
 * not applied, so templates written for docker still run on the embedded default. Services run
 * in the workspace's home, so a sync of a folder onto its own path is that folder (`shared`).
 */
export const PROCESS_CAPABILITIES: RuntimeCapabilities = Object.freeze({
  serviceImages: 'unsupported', serviceVolumes: 'ignored', resources: 'ignored', dependsOn: 'enforced', sync: 'shared', ports: 'enforced',
  serviceAgents: 'enforced', restartAfterSync: 'unsupported', oneOffRuns: 'unsupported',
});

/** Says in the build log what of the plan this runtime leaves out (PROCESS_CAPABILITIES). */
function logIgnoredFeatures(plan: WorkspacePlan, context: DriverContext): void {
  if (Object.keys(plan.resources).length > 0) context.log('The process runtime sets no resource limits; workspace.resources is not applied.');
  const withVolumes = plan.services.filter((s) => s.volumes.length > 0).map((s) => s.name);
  if (withVolumes.length > 0) context.log(`The process runtime mounts no service volumes (${withVolumes.join(', ')}): services keep their data in the workspace home.`);
}

/** What den logs at start, and what each workspace's DTO says, when workspaces run unsandboxed. */
export const UNSANDBOXED_WARNING = 'bubblewrap (bwrap) is not installed: workspaces of the process runtime are NOT isolated. Their code runs as the server\'s user, can read and change den\'s data dir (other workspaces, the database), and shares the host\'s network (other workspaces\' services, den itself). Install bubblewrap (apt-get install bubblewrap), or set requireSandbox (--require-sandbox, DEN_REQUIRE_SANDBOX=true) to refuse to start without it.';

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
