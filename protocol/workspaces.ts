import { z } from 'zod';

/** Workspace names are DNS labels (they end up in hostnames and preview URLs). */
export const WORKSPACE_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
export const WORKSPACE_NAME_MAX = 32;

export const workspaceStatuses = ['pending', 'starting', 'running', 'stopping', 'stopped', 'deleting', 'deleted', 'failed'] as const;
export type WorkspaceStatusName = (typeof workspaceStatuses)[number];
export const buildTransitions = ['start', 'stop', 'delete'] as const;
export const buildStates = ['queued', 'running', 'succeeded', 'failed', 'canceled'] as const;

export const parameterValueSchema = z.union([z.string(), z.number(), z.boolean(), z.array(z.string())]);
export const parameterValuesSchema = z.record(z.string(), parameterValueSchema);

export const buildStepSchema = z.object({
  name: z.string(),
  startedAt: z.string(),
  finishedAt: z.string().optional(),
  durationMs: z.number().optional(),
  state: z.enum(['running', 'succeeded', 'failed']),
});
export type BuildStepDto = z.infer<typeof buildStepSchema>;

export const buildSchema = z.object({
  id: z.string(),
  number: z.number().int(),
  workspaceId: z.string(),
  transition: z.enum(buildTransitions),
  reason: z.string(),
  initiator: z.string().nullable(),
  state: z.enum(buildStates),
  error: z.string().nullable(),
  steps: z.array(buildStepSchema),
  templateVersionId: z.string(),
  attempts: z.number().int(),
  createdAt: z.string(),
  startedAt: z.string().nullable(),
  finishedAt: z.string().nullable(),
});
export type BuildDto = z.infer<typeof buildSchema>;

/** The latest build as listed with a workspace (no steps: the list stays small and fast). */
export const buildSummarySchema = buildSchema.pick({ id: true, number: true, transition: true, state: true, error: true, createdAt: true, finishedAt: true });
export type BuildSummaryDto = z.infer<typeof buildSummarySchema>;

/** How the runtime isolates workspaces from each other and from den (a property of the runtime, not stored). */
export const workspaceIsolationSchema = z.object({
  /** false: workspace code runs with den's rights and network (the process runtime without bubblewrap) */
  sandboxed: z.boolean(),
  /** a sentence for the user when the workspace is not isolated */
  warning: z.string().optional(),
});
export type WorkspaceIsolation = z.infer<typeof workspaceIsolationSchema>;

export const workspaceHealthSchema = z.object({
  state: z.enum(['ok', 'down']),
  /** a full sentence: what died, when, and why as far as the runtime knows */
  message: z.string(),
  at: z.string(),
});
export type WorkspaceHealthDto = z.infer<typeof workspaceHealthSchema>;

/** One agent of a workspace: its own ('main') or the one beside an environment service. */
export const agentSchema = z.object({
  name: z.string(),
  /** the service it runs beside; null for the workspace's main agent */
  service: z.string().nullable(),
  /** the lifecycle state it last reported (starting, ready, start_error, shutting_down, off) */
  state: z.string().nullable(),
  connected: z.boolean(),
  connectedAt: z.string().nullable(),
  disconnectedAt: z.string().nullable(),
});
export type AgentDto = z.infer<typeof agentSchema>;

/**
 * One environment service of a workspace as den knows it: started by the workspace's last start
 * build, and down once the runtime reported it dead (exited, OOM-killed, removed, failing its
 * readiness check) since then. den does not poll services; `down` is what the reconciler observed.
 */
export const serviceStatusSchema = z.object({
  name: z.string(),
  /**
   * starting: the workspace is starting; running: started, no death seen since; down: see
   * message; unknown: the workspace went down for another reason and den stopped watching;
   * stopped: the workspace is not running
   */
  state: z.enum(['starting', 'running', 'down', 'unknown', 'stopped']),
  /** for down and unknown: the sentence that says why */
  message: z.string().nullable(),
  /** when the state began, as far as den knows (the start build, or the event) */
  since: z.string().nullable(),
  /**
   * the ports the template declares for it; `address` (host:port, while the workspace runs) is
   * where the workspace reaches each, which is another port on runtimes that remap them (process)
   */
  ports: z.array(z.object({ port: z.number().int(), name: z.string().optional(), address: z.string().optional() })),
  /** true when an agent runs beside it (exec and terminals with ?service=NAME) */
  agent: z.boolean(),
});
export type ServiceStatusDto = z.infer<typeof serviceStatusSchema>;

export const workspaceSchema = z.object({
  id: z.string(),
  name: z.string(),
  owner: z.string(),
  template: z.string(),
  templateVersion: z.number().int(),
  templateVersionId: z.string(),
  /** true when the template's active version is newer than the one the workspace runs */
  outdated: z.boolean(),
  params: z.record(z.string(), z.unknown()),
  status: z.enum(workspaceStatuses),
  agentState: z.string().nullable(),
  /**
   * What den observed after the build (null: nothing yet): down when the agent, the container or
   * a service died (start it again), ok once a later start brought it back. Status stays as the
   * lifecycle left it.
   */
  health: workspaceHealthSchema.nullable(),
  latestBuild: buildSummarySchema.nullable(),
  /** when the workspace last had SSH traffic (to the minute); null when it never had any */
  lastActivityAt: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
  /** set when one workspace is read (GET /workspaces/:owner/:name, `den show`) */
  isolation: workspaceIsolationSchema.optional(),
  /** set when one workspace is read: every agent it runs, the main one first */
  agents: z.array(agentSchema).optional(),
  /** set when one workspace is read: its environment services in the template's order */
  services: z.array(serviceStatusSchema).optional(),
});
export type WorkspaceDto = z.infer<typeof workspaceSchema>;

export const workspaceListSchema = z.object({
  workspaces: z.array(workspaceSchema),
  total: z.number().int(),
  limit: z.number().int(),
  offset: z.number().int(),
});
export type WorkspaceList = z.infer<typeof workspaceListSchema>;

export const workspaceWithBuildSchema = z.object({ workspace: workspaceSchema, build: buildSchema });
export type WorkspaceWithBuild = z.infer<typeof workspaceWithBuildSchema>;

export const createWorkspaceSchema = z.object({
  /** checked by the service (WORKSPACE_NAME_INVALID with a sentence), not here */
  name: z.string().max(256),
  template: z.string().min(1).max(63),
  params: parameterValuesSchema.default({}),
  /** create for another user (owner role only) */
  owner: z.string().min(1).max(64).optional(),
});
export type CreateWorkspaceRequest = z.input<typeof createWorkspaceSchema>;

export const updateWorkspaceSchema = z.object({ params: parameterValuesSchema.default({}) });
export const startWorkspaceSchema = z.object({ params: parameterValuesSchema.default({}) }).default({ params: {} });

export const listWorkspacesQuerySchema = z.object({
  owner: z.string().min(1).max(64).optional(),
  all: z.enum(['0', '1', 'true', 'false']).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  offset: z.coerce.number().int().min(0).default(0),
});

export const workspaceParamsSchema = z.object({ owner: z.string().min(1).max(64), name: z.string().min(1).max(64) });
/** `?service=NAME` on exec and terminal routes: the agent beside that service instead of the workspace's own. */
export const agentQuerySchema = z.object({
  service: z.string().min(1).max(32).regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'A service name is lowercase letters, digits and -.').optional(),
});
export const buildParamsSchema = workspaceParamsSchema.extend({ number: z.coerce.number().int().min(1) });

export const buildListSchema = z.object({ builds: z.array(buildSchema) });

export const buildLogLineSchema = z.object({
  id: z.number().int(),
  ts: z.string(),
  stream: z.enum(['system', 'stdout', 'stderr']),
  step: z.string().nullable(),
  line: z.string(),
});
export type BuildLogLine = z.infer<typeof buildLogLineSchema>;

export const buildLogsQuerySchema = z.object({
  follow: z.enum(['0', '1', 'true', 'false']).optional(),
  after: z.coerce.number().int().min(0).default(0),
  /** ndjson (default) or sse when following */
  format: z.enum(['ndjson', 'sse']).optional(),
});

/**
 * Something that happened to a workspace that its owner should know about. `kind` is stable
 * (agent_connection_replaced, agent_protocol_violation, agent_disconnected for a service's agent,
 * agent_lost, <subject>_exited...); `message` is a sentence; `detail` the cause (`detail.agent`
 * names the agent when it is a service's).
 */
export const workspaceEventSchema = z.object({
  id: z.number().int(),
  ts: z.string(),
  kind: z.string(),
  message: z.string(),
  detail: z.record(z.string(), z.unknown()),
});
export type WorkspaceEvent = z.infer<typeof workspaceEventSchema>;

/** GET /workspaces/:owner/:name/events: newest first. */
export const workspaceEventListSchema = z.object({ events: z.array(workspaceEventSchema) });
