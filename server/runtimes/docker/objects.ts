import { createHash } from 'node:crypto';
import type { ServicePlan, WorkspaceIdentity, WorkspacePlan } from '../driver.ts';
import { AGENT_COMMAND, AGENT_MOUNT_PATH } from '../agent-bundle.ts';
import type { ContainerSpec } from './docker-api.ts';

/**
 * Pure rendering: plan -> the names, labels and container specs of a workspace's Docker objects.
 * Every object carries den.managed=true, den.workspace.id and den.owner, so status, delete and
 * the garbage collector find them by label, never by parsing names.
 */
export const LABEL_MANAGED = 'den.managed';
export const LABEL_WORKSPACE = 'den.workspace.id';
/** which den deployment made it: servers sharing an engine never list or collect each other's */
export const LABEL_INSTANCE = 'den.instance';
export const LABEL_OWNER = 'den.owner';
export const LABEL_OWNER_ID = 'den.owner.id';
export const LABEL_KIND = 'den.kind';
export const LABEL_SERVICE = 'den.service';
export const LABEL_SPEC = 'den.spec';
export const LABEL_AGENT_BUNDLE = 'den.agent.bundle';
/** a one-off container's deadline (epoch ms): past it (and a grace), the garbage collector removes it */
export const LABEL_DEADLINE = 'den.deadline';
/** the digest of the agent's manifest: a changed manifest changes the spec hash, so the agent restarts */
export const LABEL_AGENT_REVISION = 'den.agent.revision';

export const HOME_PATH = '/home/den';
/** uid:gid of the `den` user in den's images; any image runs the workspace as this user. */
export const WORKSPACE_USER = '1000:1000';

/**
 * Docker's embedded DNS answers service names at once but forwards unknown names upstream, which
 * a host without egress never answers: glibc's default (5 s x 2 attempts, A and AAAA) made such a
 * lookup hang 20 s (measured); with these it fails in 1-3 s. Upstreams that work answer in ms.
 */
export const DNS_OPTIONS = ['timeout:1', 'attempts:2'];

export type ObjectKind = 'workspace' | 'service' | 'network' | 'home' | 'volume' | 'home-init' | 'one-off';

export const names = {
  network: (workspaceId: string) => `den-${workspaceId}`,
  /** Linux interface names stop at 15 characters; test/services/docker.sh isolates dn-+ bridges. */
  bridge: (workspaceId: string) => `dn-${workspaceId.replace(/[^a-zA-Z0-9]/g, '').slice(0, 12)}`,
  workspace: (workspaceId: string) => `den-${workspaceId}-workspace`,
  service: (workspaceId: string, service: string) => `den-${workspaceId}-svc-${safe(service)}`,
  /** a task's or test's container from a service's image (`oneOff: true`), one per run */
  oneOff: (workspaceId: string, service: string, run: string) => `den-${workspaceId}-run-${safe(service)}-${run}`,
  home: (workspaceId: string) => `den-${workspaceId}-home`,
  volume: (workspaceId: string, service: string, volume: string) => `den-${workspaceId}-${safe(service)}-${safe(volume)}`,
  agentBundle: (hash: string) => `den-agent-${hash.slice(0, 16)}`,
};

export function labelsFor(instance: string, workspace: WorkspaceIdentity, kind: ObjectKind, extra: Record<string, string> = {}): Record<string, string> {
  return {
    [LABEL_MANAGED]: 'true',
    [LABEL_INSTANCE]: instance,
    [LABEL_WORKSPACE]: workspace.id,
    [LABEL_OWNER]: workspace.ownerName,
    [LABEL_OWNER_ID]: workspace.ownerId,
    [LABEL_KIND]: kind,
    ...extra,
  };
}

/** Label filter for list calls: everything this den made for one workspace (or for all). */
export function labelFilter(instance: string, workspaceId?: string): string {
  const label = [`${LABEL_MANAGED}=true`, `${LABEL_INSTANCE}=${instance}`];
  if (workspaceId) label.push(`${LABEL_WORKSPACE}=${workspaceId}`);
  return JSON.stringify({ label });
}

export interface WorkspaceContainerInput {
  instance: string;
  plan: WorkspacePlan;
  /** the agent URL as seen from inside the container */
  agentUrl: string;
  /** volume holding the agent bundle; undefined when the image carries the same bundle */
  agentVolume?: string;
  extraHosts: string[];
}

export function workspaceContainerSpec(input: WorkspaceContainerInput): ContainerSpec {
  const { plan } = input;
  const network = names.network(plan.workspace.id);
  const mounts: NonNullable<ContainerSpec['HostConfig']['Mounts']> = [
    { Type: 'volume', Source: names.home(plan.workspace.id), Target: HOME_PATH },
  ];
  if (input.agentVolume) mounts.push({ Type: 'volume', Source: input.agentVolume, Target: AGENT_MOUNT_PATH, ReadOnly: true });
  const { cpu, memoryBytes, pids } = plan.resources;
  const spec: ContainerSpec = {
    name: names.workspace(plan.workspace.id),
    Image: plan.image,
    Entrypoint: AGENT_COMMAND,
    Cmd: [],
    // Secrets (the agent token) are not here: runContainer adds them when it creates the
    // container, after the hash, so a new token never makes a running workspace look changed.
    Env: envList({ HOME: HOME_PATH, ...plan.env, DEN_AGENT_URL: input.agentUrl }),
    User: WORKSPACE_USER,
    WorkingDir: HOME_PATH,
    Hostname: hostname(plan.workspace.name),
    Labels: labelsFor(input.instance, plan.workspace, 'workspace', { [LABEL_AGENT_REVISION]: plan.agent.revision }),
    HostConfig: {
      Mounts: mounts,
      NetworkMode: network,
      Privileged: false,
      // docker-init reaps the zombies of everything the agent starts (shells, dev servers).
      Init: true,
      ExtraHosts: input.extraHosts,
      DnsOptions: DNS_OPTIONS,
      ...(cpu ? { NanoCpus: Math.round(cpu * 1e9) } : {}),
      // Swap equal to memory: the limit is the limit, not limit + as much swap again.
      ...(memoryBytes ? { Memory: memoryBytes, MemorySwap: memoryBytes } : {}),
      ...(pids ? { PidsLimit: pids } : {}),
      LogConfig: CONTAINER_LOG,
    },
  };
  return withSpecHash(spec);
}

/**
 * What the engine keeps of a container's output: workspace code writes it, so it is bounded
 * (Docker's default json-file log grows without end). The engine rotates, keeping the newest
 * 2 x 16 MiB; the process runtime keeps head and tail instead (process/log-files.ts).
 */
export const CONTAINER_LOG = Object.freeze({ Type: 'json-file', Config: Object.freeze({ 'max-size': '16m', 'max-file': '2' }) });

/** What a service container needs for the agent beside it (ServicePlan.agent). */
export interface ServiceAgentInput {
  /** volume holding the agent bundle; undefined when the image carries the same bundle */
  volume?: string;
  /** how the agent reaches den (the host alias), as for the workspace container */
  extraHosts: string[];
}

export function serviceContainerSpec(instance: string, plan: WorkspacePlan, service: ServicePlan, agent?: ServiceAgentInput): ContainerSpec {
  const network = names.network(plan.workspace.id);
  const firstPort = service.ports[0]?.port;
  const mounts: NonNullable<ContainerSpec['HostConfig']['Mounts']> = service.volumes.map((volume) => ({
    Type: 'volume' as const, Source: names.volume(plan.workspace.id, service.name, volume.name), Target: volume.path,
  }));
  if (agent?.volume) mounts.push({ Type: 'volume', Source: agent.volume, Target: AGENT_MOUNT_PATH, ReadOnly: true });
  const spec: ContainerSpec = {
    name: names.service(plan.workspace.id, service.name),
    Image: service.image ?? plan.image,
    // afterSync: restart: the command runs under the supervisor of the agent bundle the container
    // mounts, which restarts it in place (the container, and the agent beside the service, stay up)
    ...(service.restartable && agent ? { Entrypoint: [...AGENT_COMMAND, 'supervise', '--'] } : {}),
    ...(service.command ? { Cmd: service.command } : {}),
    // Templates write ~/app; Docker wants an absolute path (den's images keep home at /home/den).
    ...(service.workdir ? { WorkingDir: service.workdir.replace(/^~(?=\/|$)/, HOME_PATH) } : {}),
    Env: envList({
      ...plan.env,
      ...service.env,
      HOST: '0.0.0.0',
      ...(firstPort !== undefined ? { PORT: String(firstPort) } : {}),
    }),
    Hostname: hostname(service.name),
    Labels: labelsFor(instance, plan.workspace, 'service', {
      [LABEL_SERVICE]: service.name,
      ...(service.agent ? { [LABEL_AGENT_REVISION]: service.agent.revision } : {}),
    }),
    HostConfig: {
      Mounts: mounts,
      NetworkMode: network,
      Privileged: false,
      // docker-init also reaps the zombies of what a service's agent starts
      Init: true,
      ...(agent ? { ExtraHosts: agent.extraHosts } : {}),
      DnsOptions: DNS_OPTIONS,
      LogConfig: CONTAINER_LOG,
    },
    // The service name is its DNS name on the workspace's network (resolveEndpoints promises it).
    NetworkingConfig: { EndpointsConfig: { [network]: { Aliases: [service.name] } } },
  };
  return withSpecHash(spec);
}

/** Services in an order where each comes after everything it depends on. */
export function startOrder(services: readonly ServicePlan[]): ServicePlan[] {
  const byName = new Map(services.map((service) => [service.name, service]));
  const ordered: ServicePlan[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (service: ServicePlan, path: string[]): void => {
    if (state.get(service.name) === 'done') return;
    if (state.get(service.name) === 'visiting') {
      throw new Error(`Services depend on each other in a cycle: ${[...path, service.name].join(' -> ')}.`);
    }
    state.set(service.name, 'visiting');
    for (const dependency of service.dependsOn) {
      const next = byName.get(dependency);
      if (next) visit(next, [...path, service.name]);
    }
    state.set(service.name, 'done');
    ordered.push(service);
  };
  for (const service of services) visit(service, []);
  return ordered;
}

function withSpecHash(spec: ContainerSpec): ContainerSpec {
  const hash = createHash('sha256').update(JSON.stringify(spec)).digest('hex').slice(0, 32);
  return { ...spec, Labels: { ...spec.Labels, [LABEL_SPEC]: hash } };
}

export function envList(env: Record<string, string>): string[] {
  return Object.entries(env).map(([key, value]) => `${key}=${value}`);
}

function safe(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9_.-]/g, '-');
}

function hostname(name: string): string {
  return safe(name).replace(/[_.]/g, '-').replace(/^-+|-+$/g, '').slice(0, 63) || 'workspace';
}
