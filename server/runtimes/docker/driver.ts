import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { Logger } from 'pino';
import { AppError } from '../../../protocol/errors.ts';
import {
  secretsOf, type DriverContext, type RuntimeDriver, type RuntimeStatus, type ServicePlan, type StartContext, type WorkspaceIdentity, type WorkspacePlan,
} from '../driver.ts';
import { createAgentVolumes } from './agent-volume.ts';
import { createVerbLocks } from '../verb-locks.ts';
import { AGENT_COMMAND, AGENT_MOUNT_PATH } from '../agent-bundle.ts';
import {
  ensureImage, ensureNetwork, ensureVolume, removeContainers, removeNetwork, removeUnplannedServices, removeVolumes, runContainer, workspaceIds,
} from './apply.ts';
import { engineMessage, ignoreMissing, isEngineUnreachable, type ContainerApi, type DockerApi } from './docker-api.ts';
import { observeDockerEvents } from './events.ts';
import { createAgentGateway, HOST_ALIAS_ENTRY } from './gateway.ts';
import {
  envList, HOME_PATH, LABEL_AGENT_BUNDLE, LABEL_KIND, LABEL_WORKSPACE, labelFilter, labelsFor, names, serviceContainerSpec, startOrder, workspaceContainerSpec,
} from './objects.ts';
import { exitSentence, followLogs, tailLogs, waitUntilReady } from './readiness.ts';
import { removeExpiredOneOffs, runOneOffContainer } from './one-off.ts';
import { containerLogLines } from './service-logs.ts';

export interface DockerDriverOptions {
  log: Logger;
  /** the engine client: `new Dockerode()` (only server/runtimes/* import dockerode) */
  docker?: DockerApi;
  /** an assembled agent bundle (see agent-bundle.ts); assembled from this checkout when absent */
  agentBundleDir?: string;
  /**
   * Which den deployment this is (label den.instance, default `den`). Servers sharing one engine
   * need different values, or each lists and garbage-collects the other's workspaces.
   */
  instance?: string;
  /** seconds a container gets between SIGTERM and SIGKILL on stop (default 10) */
  stopGraceSeconds?: number;
}

/** RuntimeDriver plus the garbage collector for objects whose workspace is gone. */
export interface DockerDriver extends RuntimeDriver {
  /** Deletes every den-labeled object of a workspace id `exists` says no; returns the ids removed. */
  collectGarbage(exists: (workspaceId: string) => boolean | Promise<boolean>): Promise<string[]>;
}

const LOG_TAIL_LINES = 20;
/** How long a ready service's log may still deliver lines into the build log. */
const LOG_SETTLE_MS = 100;
const HOME_INIT_SCRIPT = `
const fs = require('node:fs'), path = require('node:path'), home = ${JSON.stringify(HOME_PATH)};
if (fs.statSync(home).uid !== 1000) fs.chownSync(home, 1000, 1000);
let skel = [];
try { skel = fs.readdirSync('/etc/skel'); } catch {}
for (const name of skel) {
  const target = path.join(home, name);
  if (fs.existsSync(target)) continue;
  fs.cpSync(path.join('/etc/skel', name), target, { recursive: true });
  fs.chownSync(target, 1000, 1000);
}
if (fs.readdirSync(home).length === 0) { fs.writeFileSync(path.join(home, '.den-home'), ''); fs.chownSync(path.join(home, '.den-home'), 1000, 1000); }
`;

/**
 * The docker runtime: a workspace is a container (agent as its command, home on a named volume,
 * limits, non-root, unprivileged) on its own bridge network; environment services are containers
 * on that network, reachable by service name. See docs/docker.md.
 */
export async function createDockerDriver(options: DockerDriverOptions): Promise<DockerDriver> {
  const docker = options.docker ?? (await defaultClient());
  const graceSeconds = options.stopGraceSeconds ?? 10;
  const instance = options.instance ?? 'den';
  const gateway = createAgentGateway(docker, options.log);
  const agentVolumes = createAgentVolumes(docker, options.agentBundleDir ?? mkdtempSync(join(tmpdir(), 'den-agent-bundle-')));
  agentVolumes.bundleHash(); // fail at server start, not at the first workspace, when the bundle cannot be made
  const starting = new Set<string>();
  const { serialize, active, endedAt } = createVerbLocks();

  async function startService(plan: WorkspacePlan, service: ServicePlan, network: string, context: StartContext): Promise<void> {
    for (const volume of service.volumes) {
      await ensureVolume(docker, instance, plan.workspace, names.volume(plan.workspace.id, service.name, volume.name), 'volume', { 'den.service': service.name });
    }
    const agent = service.agent
      ? { volume: (await agentVolumes.volumeFor(service.image ?? plan.image, service.agent.delivery)).volume, extraHosts: [HOST_ALIAS_ENTRY] }
      : undefined;
    const { container, reused } = await runContainer(docker, plan.workspace, serviceContainerSpec(instance, plan, service, agent));
    if (reused) {
      context.log(`Service ${service.name} is unchanged and running: skipped.`);
      await ensureServiceAgent(plan, service, container, context);
      return;
    }
    context.log(`Started service ${service.name} (${service.image ?? plan.image}).`);
    const logs = await followLogs(docker, container, (line, stream) => context.log(`[${service.name}] ${line}`, stream));
    let result;
    try {
      result = await waitUntilReady({ container, network, readiness: service.readiness, signal: context.signal });
      // the probe reaches the container directly, its log comes through the engine: lines written
      // just before it became ready may still be on their way into the build log
      if (result.ok) await Promise.race([logs.ended, new Promise((resolve) => setTimeout(resolve, LOG_SETTLE_MS))]);
    } finally {
      logs.stop();
    }
    if (!result.ok) {
      const tail = await tailLogs(container, LOG_TAIL_LINES);
      throw new AppError('RUNTIME_ERROR',
        `Service ${service.name} failed to start: ${result.reason}. Check its image, command and readiness check in the template.`,
        { detail: tail.length > 0 ? `Last lines of its log:\n${tail.join('\n')}` : 'It wrote nothing to its log.' });
    }
    context.log(`Service ${service.name} is ready.`);
    await ensureServiceAgent(plan, service, container, context);
  }

  /**
   * Starts the agent beside a service (ServicePlan.agent) inside its container, as a process of
   * its own next to the service's, from the bundle the container mounts: the service's image and
   * command stay as they are. A running one is left alone (re-applying changes nothing); one
   * that died is started again with a new token.
   */
  async function ensureServiceAgent(plan: WorkspacePlan, service: ServicePlan, container: ContainerApi, context: StartContext): Promise<void> {
    if (!service.agent) return;
    const { Processes } = await container.top({ ps_args: '-eo pid,args' });
    // the agent's argv ends with agent.mjs; the supervisor of afterSync: restart (`agent.mjs supervise -- CMD`) is not it
    if (Processes.some((row) => row.join(' ').trimEnd().endsWith(AGENT_COMMAND[1]))) {
      context.log(`The agent of service ${service.name} is already running.`);
      return;
    }
    const env = [`DEN_AGENT_URL=${await gateway.agentUrl(service.agent.url)}`];
    for (const secret of secretsOf(plan, service.agent.name)) env.push(`${secret.env}=${await context.secret(secret.name)}`);
    const exec = await container.exec({ Cmd: AGENT_COMMAND, Env: env, AttachStdout: false, AttachStderr: false });
    // detached: the engine answers at once with an empty body, read to its end so the socket is freed
    (await exec.start({ Detach: true }))?.resume();
    context.log(`Started the agent of service ${service.name} beside it (${service.agent.delivery.kind === 'image' ? 'from its image' : 'from the read-only agent volume'}).`);
  }

  /** Home volume and agent volume, prepared while services start. */
  async function prepareWorkspaceMounts(plan: WorkspacePlan): Promise<{ agentVolume?: string }> {
    const [created, agent] = await Promise.all([
      ensureVolume(docker, instance, plan.workspace, names.home(plan.workspace.id), 'home'),
      agentVolumes.volumeFor(plan.image, plan.agent.delivery),
    ]);
    if (created && !agent.denImage) await prepareHome(plan, agent.volume!);
    return { agentVolume: agent.volume };
  }

  async function startWorkspace(plan: WorkspacePlan, agentVolume: string | undefined, context: StartContext): Promise<void> {
    const spec = workspaceContainerSpec({
      instance, plan, agentVolume, agentUrl: await gateway.agentUrl(plan.agent.url), extraHosts: [HOST_ALIAS_ENTRY],
    });
    const secrets = async () => envList(Object.fromEntries(
      await Promise.all(secretsOf(plan, plan.agent.name).map(async (secret) => [secret.env, await context.secret(secret.name)] as const))));
    const { container, reused } = await runContainer(docker, plan.workspace, spec, secrets);
    if (reused) {
      context.log('The workspace container is already running.');
      return;
    }
    const info = await container.inspect();
    if (!info.State.Running) {
      const tail = await tailLogs(container, LOG_TAIL_LINES);
      throw new AppError('RUNTIME_ERROR', `The workspace container stopped right after it started: ${exitSentence(info)}.`,
        { detail: tail.join('\n') || undefined });
    }
    context.log(`Started the workspace container from ${plan.image}${agentVolume ? ' with the agent mounted read-only' : ''}.`);
  }

  /**
   * A fresh home volume of an image without /home/den is root-owned: hand it to the den user.
   * It must not stay empty either: Docker copies the ownership of the (root-owned) mount point
   * it creates onto an empty volume at every mount, so /etc/skel's files go in (or a marker).
   */
  async function prepareHome(plan: WorkspacePlan, agentVolume: string): Promise<void> {
    const helper = await docker.createContainer({
      name: `${names.home(plan.workspace.id)}-init`,
      Image: plan.image,
      Entrypoint: [`${AGENT_MOUNT_PATH}/node`, '-e', HOME_INIT_SCRIPT],
      Cmd: [],
      User: '0:0',
      Labels: labelsFor(instance, plan.workspace, 'home-init'),
      HostConfig: {
        NetworkMode: 'none',
        Mounts: [
          { Type: 'volume', Source: names.home(plan.workspace.id), Target: HOME_PATH },
          { Type: 'volume', Source: agentVolume, Target: AGENT_MOUNT_PATH, ReadOnly: true },
        ],
      },
    });
    try {
      await helper.start();
      await helper.wait();
    } finally {
      await ignoreMissing(helper.remove({ force: true }));
    }
  }

  async function checkResources(plan: WorkspacePlan): Promise<void> {
    if (!plan.resources.memoryBytes && !plan.resources.cpu) return;
    const info = await docker.info();
    if (plan.resources.memoryBytes && info.MemTotal && plan.resources.memoryBytes > info.MemTotal) {
      throw new AppError('RUNTIME_ERROR',
        `The template asks for ${gib(plan.resources.memoryBytes)} of memory, but the Docker host has only ${gib(info.MemTotal)}. Lower the memory in the template or its parameters.`);
    }
    if (plan.resources.cpu && info.NCPU && plan.resources.cpu > info.NCPU) {
      throw new AppError('RUNTIME_ERROR',
        `The template asks for ${plan.resources.cpu} CPUs, but the Docker host has only ${info.NCPU}. Lower the CPU count in the template or its parameters.`);
    }
  }

  async function removeAll(workspace: WorkspaceIdentity, context?: DriverContext): Promise<void> {
    await removeContainers(docker, instance, workspace.id, graceSeconds, context);
    await removeNetwork(docker, instance, workspace.id);
    await removeVolumes(docker, instance, workspace.id);
  }

  const driver: DockerDriver = {
    name: 'docker',
    isolation: { sandboxed: true },
    // sync: the server pipes the workspace agent's folder into the service's agent (server/sync/).
    capabilities: Object.freeze({
      serviceImages: 'enforced', serviceVolumes: 'enforced', resources: 'enforced', dependsOn: 'enforced', sync: 'enforced', ports: 'enforced', serviceAgents: 'enforced', oneOffRuns: 'enforced',
      // afterSync: restart: the command runs under the agent bundle's supervisor (objects.ts)
      restartAfterSync: 'enforced',
    }),
    // den's images carry the agent (a newer bundle is mounted over an older one); others get the volume
    agentDelivery: Object.freeze(['image', 'volume'] as const),

    async resolveEndpoints(_workspace, services) {
      // Service containers carry their name as a DNS alias on the workspace network.
      return Object.fromEntries(services.map((request) => [
        request.service,
        Object.fromEntries(request.ports.map((port) => [port, { host: request.service, port }])),
      ]));
    },

    start(plan, context) {
      return serialize(plan.workspace.id, async () => {
        starting.add(plan.workspace.id);
        try {
          await docker.ping().catch((error: unknown) => { throw engineError(error, 'starting the workspace'); });
          await checkResources(plan);
          const order = startOrder(plan.services);
          const images = new Set([plan.image, ...order.map((s) => s.image ?? plan.image)]);
          await Promise.all([...images].map((image) => ensureImage(docker, image, context)));
          const [network, mounts] = await Promise.all([ensureNetwork(docker, instance, plan.workspace), prepareWorkspaceMounts(plan)]);
          await removeUnplannedServices(docker, instance, plan.workspace.id, new Set(order.map((s) => s.name)), graceSeconds, context);
          for (const service of order) await startService(plan, service, network, context);
          await startWorkspace(plan, mounts.agentVolume, context);
        } catch (error) {
          // Nothing half-started stays running: containers go, volumes stay (as on stop).
          await removeContainers(docker, instance, plan.workspace.id, 0).catch(() => undefined);
          await removeNetwork(docker, instance, plan.workspace.id).catch(() => undefined);
          throw toAppError(error, 'starting the workspace');
        } finally {
          starting.delete(plan.workspace.id);
        }
      });
    },

    stop(workspace, context) {
      return serialize(workspace.id, async () => {
        try {
          await removeContainers(docker, instance, workspace.id, graceSeconds, context);
          await removeNetwork(docker, instance, workspace.id);
        } catch (error) {
          throw toAppError(error, 'stopping the workspace');
        }
      });
    },

    delete(workspace, context) {
      return serialize(workspace.id, async () => {
        try {
          await removeAll(workspace, context);
        } catch (error) {
          throw toAppError(error, 'deleting the workspace');
        }
      });
    },

    async status(workspace): Promise<RuntimeStatus> {
      if (starting.has(workspace.id)) return { phase: 'starting' };
      const containers = await docker.listContainers({ all: true, filters: labelFilter(instance, workspace.id) });
      const main = containers.find((c) => c.Labels[LABEL_KIND] === 'workspace');
      if (main) {
        if (main.State === 'running') return { phase: 'running' };
        const info = await ignoreMissing(docker.getContainer(main.Id).inspect());
        if (info && (info.State.Status === 'exited' || info.State.Status === 'dead')) {
          return { phase: 'failed', message: `The workspace container stopped: ${exitSentence(info)}.` };
        }
        return { phase: 'starting' };
      }
      const ids = await workspaceIds(docker, instance);
      return { phase: ids.has(workspace.id) ? 'stopped' : 'absent' };
    },

    async serviceLogs(workspace, service, options) {
      const container = docker.getContainer(names.service(workspace.id, service));
      const info = await ignoreMissing(container.inspect()).catch((error: unknown) => { throw toAppError(error, 'reading a service log'); });
      if (!info || info.Config.Labels?.[LABEL_WORKSPACE] !== workspace.id) {
        throw new AppError('WORKSPACE_NOT_RUNNING',
          `Service ${service} of ${workspace.ownerName}/${workspace.name} has no container, so there is no log to show: the docker runtime removes service containers, and their logs, when a workspace stops. Start it (den start ${workspace.ownerName}/${workspace.name}) and try again.`);
      }
      const lines = await containerLogLines(docker, container, options).catch((error: unknown) => { throw toAppError(error, 'reading a service log'); });
      return withEngineErrors(lines, 'reading a service log');
    },

    async runOneOff(workspace, request) {
      await docker.ping().catch((error: unknown) => { throw engineError(error, 'starting a one-off container'); });
      try {
        return await runOneOffContainer(docker, instance, workspace, request);
      } catch (error) {
        throw toAppError(error, 'running a one-off container');
      }
    },

    async listWorkspaceIds() {
      return [...(await workspaceIds(docker, instance))];
    },

    async collectGarbage(exists) {
      const removed: string[] = [];
      for (const id of await workspaceIds(docker, instance)) {
        if (await exists(id)) continue;
        await serialize(id, () => removeAll({ id, name: id, ownerId: '', ownerName: '' }));
        options.log.info({ workspaceId: id }, 'removed the Docker objects of a workspace that no longer exists');
        removed.push(id);
      }
      await removeStaleAgentVolumes(docker, agentVolumes.bundleHash());
      const expired = await removeExpiredOneOffs(docker, instance, Date.now());
      if (expired > 0) options.log.info({ count: expired }, 'removed one-off containers left past their deadline');
      return removed;
    },

    observe(onEvent) {
      return observeDockerEvents(docker, instance, (id) => ({ active: active(id), endedAt: endedAt(id) }), onEvent);
    },

    async close() {
      await gateway.close();
    },
  };
  return driver;
}

/** Agent volumes of older bundles; one still mounted by a running workspace is kept (409). */
async function removeStaleAgentVolumes(docker: DockerApi, currentHash: string): Promise<void> {
  const { Volumes } = await docker.listVolumes({ filters: JSON.stringify({ label: [`${LABEL_KIND}=agent-bundle`] }) });
  for (const volume of Volumes ?? []) {
    if (volume.Labels?.[LABEL_AGENT_BUNDLE] === currentHash) continue;
    await ignoreMissing(docker.getVolume(volume.Name).remove()).catch(() => undefined);
  }
}

async function defaultClient(): Promise<DockerApi> {
  const { default: Dockerode } = await import('dockerode');
  // dockerode's typings list callback overloads first, which TypeScript will not match against
  // promise-only signatures; every member used here was checked against them one by one.
  return new Dockerode() as unknown as DockerApi;
}

/** Engine failures in the middle of a stream become the same sentences as a verb's. */
async function* withEngineErrors<T>(lines: AsyncIterable<T>, doing: string): AsyncGenerator<T> {
  try {
    yield* lines;
  } catch (error) {
    throw toAppError(error, doing);
  }
}

function toAppError(error: unknown, doing: string): AppError {
  if (error instanceof AppError) return error;
  if (isEngineUnreachable(error)) return engineError(error, doing);
  return new AppError('RUNTIME_ERROR', `Docker failed while ${doing}: ${engineMessage(error)}.`, { cause: error });
}

function engineError(error: unknown, doing: string): AppError {
  return new AppError('RUNTIME_ERROR',
    `The Docker engine did not answer while ${doing} (${engineMessage(error)}). Start it (bash test/services/docker.sh, or your system's docker service) and retry; den removes what it had created on the next start or delete.`,
    { cause: error });
}

function gib(bytes: number): string {
  return `${(bytes / 1024 ** 3).toFixed(1)} GiB`;
}
