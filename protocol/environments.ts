import { z } from 'zod';
import { serviceStatusSchema, workspaceParamsSchema } from './workspaces.ts';

/**
 * The environment dev loop's API (docs/environments.md): tasks and tests run on demand with
 * their results and history, logs across services, and the teammates who may see an
 * environment read-only. Under /api/v1/workspaces/:owner/:name/env.
 */

const entryName = z.string().min(1).max(63).regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'Task and test names are letters, digits, ., _ and -.');

export const runEntryParamsSchema = workspaceParamsSchema.extend({ entry: entryName });
export const runIdParamsSchema = workspaceParamsSchema.extend({ id: z.string().min(1).max(64) });

/** POST .../env/tests/:entry/run?force=1: run even when a passed result of this version is cached. */
export const runTestQuerySchema = z.object({ force: z.enum(['0', '1', 'true', 'false']).optional() });

export const runHistoryQuerySchema = z.object({
  kind: z.enum(['task', 'test']).optional(),
  name: entryName.optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});

export const environmentRunSchema = z.object({
  id: z.string(),
  kind: z.enum(['task', 'test']),
  name: z.string(),
  /** the entry's version when it ran: a content hash of its inputs (docs/environments.md) */
  version: z.string(),
  /** cancelled: the client that ran it went away (Ctrl-C) and den ended it */
  state: z.enum(['running', 'passed', 'failed', 'cancelled']),
  /** null while running, and when den ended it (timeout, server shutdown) */
  exitCode: z.number().int().nullable(),
  /** build: a start build ran a task whose version changed; user: `den env run` / `den test` */
  trigger: z.enum(['build', 'user']),
  /** who ran it (a user trigger) */
  by: z.string().nullable(),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  /** bytes of output that came before the kept tail of the log */
  logDroppedBytes: z.number().int(),
});
export type EnvironmentRunDto = z.infer<typeof environmentRunSchema>;

export const environmentRunDetailSchema = environmentRunSchema.extend({ log: z.string() });
export const environmentRunListSchema = z.object({ runs: z.array(environmentRunSchema) });

/**
 * The NDJSON lines of a run's response: its output as it comes, then the result. A cached
 * test result is answered with the result line alone (`cached: true`, the run it reuses).
 */
export const runStreamLineSchema = z.union([
  z.object({ type: z.literal('output'), stream: z.enum(['stdout', 'stderr']), line: z.string() }),
  z.object({ type: z.literal('result'), cached: z.boolean(), run: environmentRunSchema }),
]);
export type RunStreamLine = z.infer<typeof runStreamLineSchema>;

const entrySummarySchema = z.object({
  name: z.string(),
  service: z.string(),
  /** true: it runs in a one-off container (pod) from the service's image, not through its agent */
  oneOff: z.boolean(),
  /** the latest run, if any */
  lastRun: environmentRunSchema.nullable(),
});

/** GET .../env: what the owner and teammates see of an environment. */
export const environmentViewSchema = z.object({
  workspace: z.string(),
  status: z.string(),
  /** owner: the workspace's owner (or den's owner role); teammate: through a grant, read-only */
  viewer: z.enum(['owner', 'teammate']),
  services: z.array(serviceStatusSchema.extend({ version: z.string().nullable() })),
  /** the workspace's apps and its services' previews (`service`), with their URLs through den (who may open one is its share level) */
  apps: z.array(z.object({ name: z.string(), port: z.number().int(), url: z.string(), service: z.string().optional() })),
  tasks: z.array(entrySummarySchema),
  tests: z.array(entrySummarySchema),
});
export type EnvironmentViewDto = z.infer<typeof environmentViewSchema>;

/** GET .../env/logs?service=api&service=db&tail=100&follow=1 */
export const environmentLogsQuerySchema = z.object({
  /** the services to show (all when omitted); repeat or separate with commas */
  service: z.union([z.string(), z.array(z.string())]).optional(),
  tail: z.coerce.number().int().min(0).max(10_000).default(100),
  follow: z.enum(['0', '1', 'true', 'false']).optional(),
});

/** One line of the merged log: which service, when den read it, the line. */
export const environmentLogLineSchema = z.object({
  service: z.string(),
  /** ISO time den read the line from the runtime */
  at: z.string(),
  stream: z.enum(['stdout', 'stderr']),
  line: z.string(),
});
export type EnvironmentLogLine = z.infer<typeof environmentLogLineSchema>;

// ---- teammates ----

export const grantParamsSchema = workspaceParamsSchema.extend({ user: z.string().min(1).max(64) });

export const groupGrantParamsSchema = workspaceParamsSchema.extend({ group: z.string().min(1).max(64) });

/** A grant names a user or a group (whose members, at the time of each request, see the environment). */
export const environmentGrantSchema = z.union([
  z.object({ user: z.string(), grantedBy: z.string(), createdAt: z.string() }),
  z.object({ group: z.string(), grantedBy: z.string(), createdAt: z.string() }),
]);
export const environmentGrantListSchema = z.object({ grants: z.array(environmentGrantSchema) });
export type EnvironmentGrantDto = z.infer<typeof environmentGrantSchema>;

/** GET /api/v1/environments/shared: the environments others granted the caller, directly or through a group. */
export const sharedEnvironmentSchema = z.object({
  /** owner/name */
  workspace: z.string(),
  owner: z.string(),
  name: z.string(),
  status: z.string(),
  /** whether a grant names the caller */
  direct: z.boolean(),
  /** the caller's groups that have a grant */
  groups: z.array(z.string()),
});
export const sharedEnvironmentListSchema = z.object({ environments: z.array(sharedEnvironmentSchema) });
export type SharedEnvironmentDto = z.infer<typeof sharedEnvironmentSchema>;
