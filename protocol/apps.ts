import { z } from 'zod';
import { shareLevels } from './template-fields.ts';

/** An app the workspace's template declares, with its URL through den (path mode, docs/apps.md). */
export const workspaceAppSchema = z.object({
  name: z.string(),
  displayName: z.string().optional(),
  port: z.number().int(),
  url: z.string(),
  /** who may open it now (docs/apps.md: share levels) */
  share: z.enum(shareLevels),
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
