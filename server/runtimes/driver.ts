import { MAIN_AGENT } from '../../protocol/agent.ts';
import type { Duplex } from 'node:stream';
import type { WorkspaceIsolation } from '../../protocol/workspaces.ts';
import type { AgentDeliveryKind, RuntimeCapabilities } from './capabilities.ts';

/**
 * The one interface every runtime implements (process, docker, kubernetes). Drivers take plain
 * data and normalise everything they report; no SDK type leaks past this file's types.
 * Every verb is idempotent: the build worker may re-run a verb after a crash.
 */
export interface RuntimeDriver {
  readonly name: RuntimeName;
  /** how this runtime isolates workspaces (shown with each workspace); undefined: no claim either way */
  readonly isolation?: WorkspaceIsolation;
  /** what of a template this runtime carries out (see capabilities.ts) */
  readonly capabilities: RuntimeCapabilities;
  /**
   * How this runtime can put the agent into a workspace or beside a service, best first; the
   * planner picks one per agent (AgentPlan.delivery). 'image' is listed by runtimes that use an
   * image's own agent when the image is one of den's.
   */
  readonly agentDelivery: readonly AgentDeliveryKind[];
  /**
   * Where each environment service port will be reachable from the workspace, before anything
   * is created, so the plan can resolve `${{ services.db.url }}`. Stable across stop/start.
   */
  resolveEndpoints(workspace: WorkspaceIdentity, services: readonly ServiceEndpointRequest[]): Promise<ServiceEndpoints>;
  /**
   * Creates or updates everything the plan describes and starts the agent. Applying the plan a
   * running workspace already has changes nothing (no container replaced, no process restarted):
   * secret values are asked of `context.secret` only when the object that holds them is created.
   */
  start(plan: WorkspacePlan, context: StartContext): Promise<void>;
  /** Removes what is not persistent; keeps home and service volumes. */
  stop(workspace: WorkspaceIdentity, context: DriverContext): Promise<void>;
  /** Removes everything, persistent volumes included. */
  delete(workspace: WorkspaceIdentity, context: DriverContext): Promise<void>;
  status(workspace: WorkspaceIdentity): Promise<RuntimeStatus>;
  /**
   * An environment service's output: the last `tail` lines, then, with `follow`, live lines
   * until the service ends or `signal` aborts. Rejects (before any line, so an API can still
   * answer with an error) with WORKSPACE_NOT_RUNNING when the runtime holds no output for it:
   * never started, or stopped on a runtime whose stop discards it.
   */
  serviceLogs(workspace: WorkspaceIdentity, service: string, options: ServiceLogOptions): Promise<AsyncIterable<ServiceLogLine>>;
  /**
   * Runs a command in a one-off container (pod) from an environment service's image, with the
   * service's environment as its running container has it, on the workspace's network, the
   * workspace's home read-only at ~; hands its output on as it comes and resolves with its exit
   * status. The container is removed when it ends, passes its time limit or `signal` aborts, and
   * by collectGarbage after its time limit when den went away mid-run (it carries its deadline).
   * Present when capabilities.oneOffRuns is 'enforced'. Rejects with WORKSPACE_NOT_RUNNING when
   * the service is not running.
   */
  runOneOff?(workspace: WorkspaceIdentity, request: OneOffRequest): Promise<OneOffResult>;
  /** Ids of workspaces this runtime holds objects for (the garbage collector's input). */
  listWorkspaceIds(): Promise<string[]>;
  /**
   * Deletes everything this runtime (this den instance's objects only) holds for workspace ids
   * `exists` says no to; returns the ids removed. Run by the reconciler, on one replica.
   */
  collectGarbage?(exists: (workspaceId: string) => Promise<boolean>): Promise<string[]>;
  /**
   * Reports what happens to workspaces after their build (a process or container that died, an
   * OOM kill, a removed object) as runtime events, until the returned function is called. Each
   * death is reported once; stop and delete by den itself are not reported.
   */
  observe?(onEvent: (event: RuntimeEvent) => void): () => void;
  /**
   * Only for runtimes whose agents cannot reach den's address (the process runtime's sandbox has
   * a network of its own): the server hands over how it takes an agent connection, and the
   * runtime passes each one on with the workspace it came from. Called once, before workspaces start.
   */
  serveAgents?(accept: AcceptAgentSocket): Promise<void>;
  /**
   * With serveAgents, when several replicas share the runtime's state (one host, one data dir):
   * the replica that served these workspaces' agents died, so this one serves them from now on
   * (their agents keep dialing the same place and reach this replica). Workspaces that are not
   * running or not this runtime's are skipped.
   */
  takeOverAgents?(workspaceIds: string[]): Promise<void>;
  /** Releases clients and handles; does not stop workspaces. */
  close(): Promise<void>;
}

/** Takes one agent connection (a raw stream carrying HTTP) that can only be from `workspaceId`. */
export type AcceptAgentSocket = (socket: Duplex, workspaceId: string) => void;

export type RuntimeName = 'process' | 'docker' | 'kubernetes';

export interface OneOffRequest {
  /** the environment service whose image and environment the command runs with */
  service: string;
  /** the command (argv), run instead of the image's entrypoint */
  command: string[];
  timeoutMs: number;
  /** aborts the run (the client went away): the container is removed */
  signal?: AbortSignal;
  /** each piece of output as it arrives; never accumulated by the driver */
  onOutput(stream: 'stdout' | 'stderr', text: string): void;
}

export interface OneOffResult {
  /** the exit status, or undefined when den ended it (time limit, abort) */
  exitCode: number | undefined;
  timedOut: boolean;
}

export interface WorkspaceIdentity {
  id: string;
  name: string;
  ownerId: string;
  ownerName: string;
  /** the template's name, when the caller knows it (runtimes label objects with it) */
  template?: string;
}

export interface DriverContext {
  /** Appends a line to the build log (stream 'system' unless given). */
  log(line: string, stream?: 'system' | 'stdout' | 'stderr'): void;
  signal: AbortSignal;
}

/**
 * What a start may ask for besides logging: the value of a secret the plan names. Each call
 * issues a fresh value and revokes the one issued before, so a driver calls it only when it
 * creates the process or container that will hold the value; whatever it keeps running goes on
 * with the value it was given.
 */
export interface StartContext extends DriverContext {
  secret(name: string): Promise<string>;
}

export interface ServiceLogOptions {
  /** how many of the latest lines to start with (all when undefined) */
  tail?: number;
  follow: boolean;
  signal: AbortSignal;
}

export interface ServiceLogLine {
  /** the process runtime writes both to one file and reports 'stdout' */
  stream: 'stdout' | 'stderr';
  line: string;
  /** when the runtime recorded the line (ISO), if it keeps times (docker does; the process runtime's log file does not) */
  at?: string;
}

export interface ServiceEndpointRequest {
  service: string;
  ports: number[];
}

/** service name -> container port -> endpoint reachable from the workspace */
export type ServiceEndpoints = Record<string, Record<number, { host: string; port: number }>>;

export interface ResourceLimits {
  /** cores, fractional allowed */
  cpu?: number;
  memoryBytes?: number;
  pids?: number;
}

export interface VolumePlan {
  name: string;
  path: string;
  sizeBytes?: number;
}

export interface ReadinessPlan {
  tcp?: number;
  http?: { port: number; path: string };
  command?: string[];
  timeoutMs: number;
  intervalMs: number;
}

export interface ServicePlan {
  name: string;
  image?: string;
  command?: string[];
  workdir?: string;
  env: Record<string, string>;
  ports: { port: number; name?: string; preview: boolean }[];
  readiness?: ReadinessPlan;
  volumes: VolumePlan[];
  dependsOn: string[];
  /** the agent den runs beside the service (template `agent: true`), named after the service */
  agent?: AgentPlan;
  /** `afterSync: restart`: the runtime runs the command so its agent can restart it in place (capability restartAfterSync) */
  restartable?: boolean;
}

/** The pure result of template version + parameters + identity: what a driver must create. */
export interface WorkspacePlan {
  workspace: WorkspaceIdentity;
  image: string;
  resources: ResourceLimits;
  home: { sizeBytes?: number };
  /** Environment for the agent and everything it starts; service URLs already included. */
  env: Record<string, string>;
  /** the workspace's own agent ('main'); service agents are in services[].agent (see planAgents) */
  agent: AgentPlan;
  /** secrets by reference: drivers fetch values through StartContext.secret, never from the plan */
  secrets: SecretPlan[];
  services: ServicePlan[];
  /** the template has tasks or tests that run in one-off containers (ADR 0030): a runtime that caps the workspace's total (a kubernetes quota) leaves room for one */
  oneOffRuns?: boolean;
}

export type RuntimeEventKind = 'exited' | 'oom_killed' | 'image_missing' | 'probe_failing' | 'removed';

/** Something a runtime observed about a workspace, normalised at the driver edge. */
export interface RuntimeEvent {
  workspaceId: string;
  kind: RuntimeEventKind;
  /**
   * what it happened to: an agent (the main one without a name, a service's agent named after
   * the service), the workspace container, or an environment service
   */
  subject: { type: 'agent' | 'workspace' | 'service'; name?: string };
  /** the cause as a phrase that completes "... exited ", e.g. "(killed by signal SIGKILL)" */
  cause: string;
  at: Date;
  detail: { exitCode?: number | null; signal?: string | null; [key: string]: unknown };
}

/** The name of the main agent's token among a plan's secrets. */
export const AGENT_TOKEN_SECRET = 'agent-token';

/** The secret holding the token of one agent: 'agent-token' for the main agent, 'agent-token.<service>' for a service's. */
export function agentTokenSecret(agent: string): string {
  return agent === MAIN_AGENT ? AGENT_TOKEN_SECRET : `${AGENT_TOKEN_SECRET}.${agent}`;
}

/** The agent whose token a secret name holds, or undefined when it is no agent token. */
export function agentOfTokenSecret(name: string): string | undefined {
  if (name === AGENT_TOKEN_SECRET) return MAIN_AGENT;
  return name.startsWith(`${AGENT_TOKEN_SECRET}.`) ? name.slice(AGENT_TOKEN_SECRET.length + 1) : undefined;
}

export interface SecretPlan {
  name: string;
  /** the environment variable its value reaches its agent as */
  env: string;
  /** the agent whose environment it goes into: 'main' or a service's agent */
  agent: string;
}

export interface AgentPlan {
  /** 'main', or the environment service it runs beside */
  name: string;
  /** the URL the agent dials */
  url: string;
  /**
   * A digest of everything the agent is told on connect (its manifest: env, startup scripts,
   * apps). Part of the agent's spec, so a changed manifest restarts the agent and an unchanged
   * one leaves it running.
   */
  revision: string;
  /** how the agent's files get to where it runs */
  delivery: AgentDelivery;
}

/**
 * How the agent (Node, agent.mjs, node-pty: agent-bundle.ts) reaches a workspace, decided by the
 * planner from the image and what the runtime offers (RuntimeDriver.agentDelivery):
 *  - image: the image is one of den's, which carry it at /opt/den/agent (a runtime may still
 *    mount the current bundle over an older one it finds there);
 *  - volume: a read-only volume holding the bundle, mounted at /opt/den/agent (docker);
 *  - path: the server's own bundle directory, bound into the sandbox (process);
 *  - download: fetched from den's agent-bundle route with the agent's token and checked against
 *    sha256 before it is unpacked (what a Kubernetes init container does).
 */
export type AgentDelivery =
  | { kind: 'image' }
  | { kind: 'volume' }
  | { kind: 'path' }
  | { kind: 'download'; url: string; sha256: string };

/** Every agent a plan runs: the main one first, then one per service that asks for it. */
export function planAgents(plan: WorkspacePlan): AgentPlan[] {
  return [plan.agent, ...plan.services.flatMap((service) => (service.agent ? [service.agent] : []))];
}

/** The plan's secrets that go into one agent's environment. */
export function secretsOf(plan: WorkspacePlan, agent: string): SecretPlan[] {
  return plan.secrets.filter((secret) => secret.agent === agent);
}

export type RuntimePhase = 'absent' | 'stopped' | 'starting' | 'running' | 'failed';

export interface RuntimeStatus {
  phase: RuntimePhase;
  /** one sentence when failed (exit code, OOM, image missing) */
  message?: string;
}
