import { createHash } from 'node:crypto';
import { MAIN_AGENT, type AgentManifest } from '../../protocol/agent.ts';
import { AppError } from '../../protocol/errors.ts';
import {
  parseBytes, parseCpu, parseDuration,
  type ParameterValue, type ReadinessSpec, type ServiceSpec, type TemplateSpec,
} from '../../protocol/template.ts';
import { templatePathProblem, type TemplatePathKind } from '../../protocol/template-paths.ts';
import { carriesAgent } from '../runtimes/agent-bundle.ts';
import type { AgentDeliveryKind } from '../runtimes/capabilities.ts';
import {
  agentTokenSecret, type AgentDelivery, type AgentPlan, type ReadinessPlan, type ServiceEndpoints, type ServicePlan, type WorkspaceIdentity, type WorkspacePlan,
} from '../runtimes/driver.ts';
import { evaluateTemplateValue } from '../templates/expressions.ts';

export interface PlanOwner {
  id: string;
  name: string;
  displayName?: string;
}

export interface PlanInput {
  spec: TemplateSpec;
  /** resolved parameter values (defaults applied, validated) */
  params: Record<string, ParameterValue>;
  workspace: WorkspaceIdentity;
  owner: PlanOwner;
  /** where each service port is reachable from the workspace (driver.resolveEndpoints) */
  endpoints: ServiceEndpoints;
  /** the URL the agent dials */
  accessUrl: string;
  /** how the runtime can deliver the agent, best first (RuntimeDriver.agentDelivery) */
  agentDelivery: readonly AgentDeliveryKind[];
  /** den's agent-bundle route and the checksum of what it serves; needed when the runtime offers 'download' */
  agentDownload?: { url: string; sha256: string };
  /** the runtime carries out `sync` (docker): a synced service gets an agent beside it, the sync's target */
  syncAgents?: boolean;
}

export interface PlanResult {
  plan: WorkspacePlan;
  /** what the main agent is told on connect */
  manifest: AgentManifest;
  /** what each agent of the plan is told on connect, by agent name (the main one included) */
  manifests: Record<string, AgentManifest>;
}

/** The agent's token reaches it as this variable (agent/main.ts reads it). */
const AGENT_TOKEN_ENV = 'DEN_AGENT_TOKEN';

const DEFAULT_SCRIPT_TIMEOUT_MS = 5 * 60 * 1000;
const DEFAULT_READINESS_TIMEOUT_MS = 60_000;
const DEFAULT_READINESS_INTERVAL_MS = 1_000;

/**
 * Template version + parameters + identity -> what a driver must create, and what the agent is
 * told. Pure: no I/O, no clock, so it is unit-tested without any runtime. Every `${{ }}` is
 * evaluated here with the scope { params, workspace, owner, services }.
 */
export function planWorkspace(input: PlanInput): PlanResult {
  const { spec, workspace } = input;
  const servicesSpec = spec.environment?.services ?? {};
  const scope = {
    params: input.params,
    workspace: { id: workspace.id, name: workspace.name, owner: workspace.ownerName },
    owner: { id: input.owner.id, name: input.owner.name, displayName: input.owner.displayName ?? input.owner.name },
    services: serviceScope(servicesSpec, input.endpoints),
  };
  const evaluate: Evaluate = (value, path) => evaluateTemplateValue(value, scope, fieldPath(path));

  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(spec.workspace.env ?? {})) {
    env[key] = String(evaluate(value, ['workspace', 'env', key]));
  }
  // den's own variables win over the template's: scripts and tools rely on them.
  env.DEN_WORKSPACE_NAME = workspace.name;
  env.DEN_WORKSPACE_ID = workspace.id;
  env.DEN_OWNER = workspace.ownerName;
  for (const [name, endpoint] of Object.entries(scope.services)) {
    if (endpoint.url) env[`DEN_SERVICE_${envName(name)}_URL`] = endpoint.url;
  }

  const resources = spec.workspace.resources ?? {};
  const agentPlan = (name: string, image: string, manifest: AgentManifest): AgentPlan => ({
    name,
    url: input.accessUrl,
    revision: createHash('sha256').update(JSON.stringify(name === MAIN_AGENT ? manifest : { service: name, manifest })).digest('hex').slice(0, 32),
    delivery: chooseDelivery(image, input, name === MAIN_AGENT ? 'workspace.image' : `environment.services.${name}`),
  });
  const image = String(evaluate(spec.workspace.image, ['workspace', 'image']));
  const services = dependencyOrder(servicesSpec).map((name) => planService(name, servicesSpec[name], evaluate));
  const manifests: Record<string, AgentManifest> = {};
  for (const service of services) {
    const serviceSpec = servicesSpec[service.name];
    if (!serviceSpec.agent && !(input.syncAgents && (serviceSpec.sync?.length ?? 0) > 0)) continue;
    // A service's agent runs no startup scripts and serves no apps: it is there for exec,
    // terminals (and later sync) into the service, in the service's own environment.
    manifests[service.name] = { env: {}, startupScripts: [], apps: [] };
    service.agent = agentPlan(service.name, service.image ?? image, manifests[service.name]);
  }
  const manifest: AgentManifest = {
    env,
    startupScripts: (spec.workspace.startup ?? []).map((script, index) => ({
      name: script.name,
      run: String(evaluate(script.run, ['workspace', 'startup', index, 'run'])),
      timeoutMs: script.timeout ? duration(script.timeout, `workspace.startup[${index}].timeout`) : DEFAULT_SCRIPT_TIMEOUT_MS,
      blocking: script.blocking,
    })),
    apps: (spec.workspace.apps ?? []).map((app) => ({
      name: app.name,
      ...(app.displayName ? { displayName: app.displayName } : {}),
      port: app.port,
    })),
  };
  const plan: WorkspacePlan = {
    workspace,
    image,
    resources: {
      ...(resources.cpu !== undefined ? { cpu: cpu(evaluate(resources.cpu, ['workspace', 'resources', 'cpu']), 'workspace.resources.cpu') } : {}),
      ...(resources.memory !== undefined ? { memoryBytes: bytes(evaluate(resources.memory, ['workspace', 'resources', 'memory']), 'workspace.resources.memory') } : {}),
      ...(resources.pids !== undefined ? { pids: wholeNumber(evaluate(resources.pids, ['workspace', 'resources', 'pids']), 'workspace.resources.pids') } : {}),
    },
    home: spec.workspace.home?.size !== undefined
      ? { sizeBytes: bytes(evaluate(spec.workspace.home.size, ['workspace', 'home', 'size']), 'workspace.home.size') }
      : {},
    env,
    agent: agentPlan(MAIN_AGENT, image, manifest),
    // Each agent's token is a secret of its own, issued when a driver creates that agent, so
    // re-applying a plan issues none.
    secrets: [MAIN_AGENT, ...services.flatMap((s) => (s.agent ? [s.name] : []))]
      .map((agent) => ({ name: agentTokenSecret(agent), env: AGENT_TOKEN_ENV, agent })),
    services,
    ...(Object.values({ ...spec.environment?.tasks, ...spec.environment?.tests }).some((entry) => entry.oneOff) ? { oneOffRuns: true } : {}),
  };
  return { plan, manifest, manifests: { ...manifests, [MAIN_AGENT]: manifest } };
}

/**
 * The first way the runtime offers that fits the image: 'image' only for den's images, which
 * carry the agent; 'download' names den's bundle route and its checksum.
 */
function chooseDelivery(image: string, input: Pick<PlanInput, 'agentDelivery' | 'agentDownload'>, field: string): AgentDelivery {
  for (const kind of input.agentDelivery) {
    if (kind === 'image') {
      if (carriesAgent(image)) return { kind };
    } else if (kind === 'download') {
      if (input.agentDownload) return { kind, ...input.agentDownload };
    } else {
      return { kind };
    }
  }
  throw new AppError('RUNTIME_CAPABILITY_MISSING',
    `${field} uses image ${image}, which does not carry den's agent, and this runtime has no other way to deliver it (${input.agentDelivery.join(', ') || 'none'}). Use one of den's images (den/base, den/node) or ask your administrator for a runtime that mounts or downloads the agent.`);
}

/** The time a start build may wait for `ready`: the blocking startup scripts plus a margin. */
export function readyTimeoutMs(manifest: AgentManifest, marginMs = 60_000): number {
  return manifest.startupScripts.filter((s) => s.blocking).reduce((sum, s) => sum + s.timeoutMs, marginMs);
}

/** DEN_SERVICE_<NAME>_URL: the name uppercased, everything not a letter or digit becomes _. */
export function envName(serviceName: string): string {
  return serviceName.toUpperCase().replace(/[^A-Z0-9]/g, '_');
}

/** Service names ordered so each comes after everything in its dependsOn (stable otherwise). */
export function dependencyOrder(services: Record<string, Pick<ServiceSpec, 'dependsOn'>>): string[] {
  const order: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, trail: string[]) => {
    if (state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') {
      throw new AppError('TEMPLATE_INVALID', `Services depend on each other in a cycle (${[...trail, name].join(' -> ')}); break the cycle in the template.`);
    }
    state.set(name, 'visiting');
    for (const dependency of services[name]?.dependsOn ?? []) if (dependency in services) visit(dependency, [...trail, name]);
    state.set(name, 'done');
    order.push(name);
  };
  for (const name of Object.keys(services)) visit(name, []);
  return order;
}

type Evaluate = (value: unknown, path: (string | number)[]) => unknown;

/** ['workspace', 'startup', 0, 'run'] -> 'workspace.startup[0].run' (how template errors name fields) */
function fieldPath(path: (string | number)[]): string {
  return path.map((part, index) => (typeof part === 'number' ? `[${part}]` : index === 0 ? part : `.${part}`)).join('');
}

function planService(name: string, spec: ServiceSpec, evaluate: Evaluate): ServicePlan {
  const at = (...rest: (string | number)[]) => ['environment', 'services', name, ...rest];
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(spec.env ?? {})) env[key] = String(evaluate(value, at('env', key)));
  return {
    name,
    ...(spec.image !== undefined ? { image: String(evaluate(spec.image, at('image'))) } : {}),
    ...(spec.command !== undefined ? { command: argv(evaluate(spec.command, at('command'))) } : {}),
    ...(spec.workdir !== undefined ? { workdir: templatePath(evaluate(spec.workdir, at('workdir')), 'home-or-container', at('workdir')) } : {}),
    env,
    ports: (spec.ports ?? []).map((port) => ({ port: port.port, ...(port.name ? { name: port.name } : {}), preview: port.preview })),
    ...(spec.readiness ? { readiness: readiness(spec.readiness, evaluate, at('readiness')) } : {}),
    volumes: (spec.volumes ?? []).map((volume, index) => ({
      name: volume.name,
      path: templatePath(evaluate(volume.path, at('volumes', index, 'path')), 'mount', at('volumes', index, 'path')),
      ...(volume.size !== undefined ? { sizeBytes: bytes(evaluate(volume.size, at('volumes', index, 'size')), fieldPath(at('volumes', index, 'size'))) } : {}),
    })),
    dependsOn: spec.dependsOn ?? [],
    ...(spec.afterSync === 'restart' ? { restartable: true } : {}),
  };
}

function readiness(spec: ReadinessSpec, evaluate: Evaluate, path: (string | number)[]): ReadinessPlan {
  const where = fieldPath(path);
  return {
    ...(spec.tcp !== undefined ? { tcp: spec.tcp } : {}),
    ...(spec.http ? { http: { port: spec.http.port, path: spec.http.path } } : {}),
    ...(spec.command !== undefined ? { command: argv(evaluate(spec.command, [...path, 'command'])) } : {}),
    timeoutMs: spec.timeout ? duration(spec.timeout, `${where}.timeout`) : DEFAULT_READINESS_TIMEOUT_MS,
    intervalMs: spec.interval ? duration(spec.interval, `${where}.interval`) : DEFAULT_READINESS_INTERVAL_MS,
  };
}

/** { <service>: { url, host, port, ports } } for the expression scope, from the first declared port. */
function serviceScope(services: Record<string, ServiceSpec>, endpoints: ServiceEndpoints) {
  const scope: Record<string, { url: string; host: string; port: number; ports: Record<string, { host: string; port: number; url: string }> }> = {};
  for (const [name, service] of Object.entries(services)) {
    const ports: Record<string, { host: string; port: number; url: string }> = {};
    for (const declared of service.ports ?? []) {
      const endpoint = endpoints[name]?.[declared.port];
      if (endpoint) ports[String(declared.port)] = { ...endpoint, url: `http://${endpoint.host}:${endpoint.port}` };
    }
    const first = service.ports?.[0] ? ports[String(service.ports[0].port)] : undefined;
    scope[name] = { url: first?.url ?? '', host: first?.host ?? '', port: first?.port ?? 0, ports };
  }
  return scope;
}

/** A command as argv: a string runs through `sh -c` (as the template schema documents). */
function argv(value: unknown): string[] {
  if (Array.isArray(value)) return value.map(String);
  return ['sh', '-c', String(value)];
}

/**
 * The push checked what it could of each path; this checks the value its expressions evaluated
 * to, and versions stored before paths were checked at push.
 */
function templatePath(value: unknown, kind: TemplatePathKind, path: (string | number)[]): string {
  const text = String(value);
  const problem = templatePathProblem(text, kind);
  if (problem === undefined) return text;
  const field = fieldPath(path);
  throw new AppError('TEMPLATE_PATH_INVALID', `${field} is ${JSON.stringify(text)}, which is not allowed. ${problem} Fix the template (or the parameter it uses) and push a new version.`, {
    validations: [{ field, detail: problem }],
  });
}

function bytes(value: unknown, field: string): number {
  const parsed = typeof value === 'string' || typeof value === 'number' ? parseBytes(value) : null;
  if (parsed === null) throw invalid(field, value, 'a size such as 512Mi or 4Gi');
  return parsed;
}

function cpu(value: unknown, field: string): number {
  const parsed = typeof value === 'string' || typeof value === 'number' ? parseCpu(value) : null;
  if (parsed === null) throw invalid(field, value, 'a number of cores such as 2 or 0.5');
  return parsed;
}

function wholeNumber(value: unknown, field: string): number {
  const parsed = typeof value === 'number' ? value : typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(parsed) || parsed <= 0) throw invalid(field, value, 'a whole number above 0');
  return parsed;
}

function duration(value: string, field: string): number {
  const parsed = parseDuration(value);
  if (parsed === null) throw invalid(field, value, 'a duration such as 30s or 5m');
  return parsed;
}

function invalid(field: string, value: unknown, expected: string): AppError {
  return new AppError('EXPRESSION_INVALID',
    `${field} is ${JSON.stringify(value)}, which is not ${expected}. Fix the template or the parameter it uses.`,
    { validations: [{ field, detail: `must be ${expected}` }] });
}
