import { z } from 'zod';
import { shareLevels } from './template-fields.ts';

export const appHealthStates = ['healthy', 'unhealthy', 'unknown'] as const;

/** What the health checks of an app found (docs/apps.md): `unknown` until the first check, and while the workspace is not running. */
export const appHealthSchema = z.object({
  state: z.enum(appHealthStates),
  /** why it is unhealthy: the last check's failure */
  message: z.string().optional(),
  /** when it went into this state */
  since: z.string().optional(),
});
export type AppHealthDto = z.infer<typeof appHealthSchema>;

/**
 * An app the workspace's template declares, or a port of an environment service marked
 * `preview: true` (then `service` names it), with its URL through den (docs/apps.md).
 */
export const workspaceAppSchema = z.object({
  name: z.string(),
  displayName: z.string().optional(),
  /** the port in the workspace; for a service's preview, the service's own port */
  port: z.number().int(),
  /** the environment service this is the preview URL of */
  service: z.string().optional(),
  url: z.string(),
  /** who may open it now (docs/apps.md: share levels) */
  share: z.enum(shareLevels),
  /** present when the template declares a health check for the app */
  health: appHealthSchema.optional(),
});

/** A TCP port something listens on inside the workspace, found in its /proc/net/tcp and tcp6. */
export const listeningPortSchema = z.object({
  port: z.number().int(),
  /** the address it is bound to (`127.0.0.1`, `0.0.0.0`, `::`, ...) */
  address: z.string(),
  url: z.string(),
  /** the app that declares this port, if any */
  app: z.string().optional(),
  /** who may open its port URL now */
  share: z.enum(shareLevels),
});

/** GET /workspaces/:owner/:name/ports (`den ports`). */
export const workspacePortsSchema = z.object({
  apps: z.array(workspaceAppSchema),
  ports: z.array(listeningPortSchema),
  /** false when the workspace's agent is not connected: `ports` is then empty, not "nothing listens" */
  detected: z.boolean(),
});
export type WorkspacePortsDto = z.infer<typeof workspacePortsSchema>;

/** PUT /workspaces/:owner/:name/shares/:target (`den share WS TARGET --level LEVEL`); TARGET is a port number or an app name. */
export const shareParamsSchema = z.object({
  owner: z.string().min(1).max(64),
  name: z.string().min(1).max(64),
  target: z.string().regex(/^(?:\d{1,5}|[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?)$/, 'Name a port (8080) or an app of the template (web).'),
});
export const shareBodySchema = z.object({ level: z.enum(shareLevels) });
export const shareSchema = z.object({ target: z.string(), level: z.enum(shareLevels), url: z.string() });
export type ShareDto = z.infer<typeof shareSchema>;
