import { z } from 'zod';

/** An app the workspace's template declares, with its URL through den (path mode, docs/apps.md). */
export const workspaceAppSchema = z.object({
  name: z.string(),
  displayName: z.string().optional(),
  port: z.number().int(),
  url: z.string(),
  /** who may open it; `owner` is the only level today */
  share: z.literal('owner'),
});

/** A TCP port something listens on inside the workspace, found in its /proc/net/tcp and tcp6. */
export const listeningPortSchema = z.object({
  port: z.number().int(),
  /** the address it is bound to (`127.0.0.1`, `0.0.0.0`, `::`, ...) */
  address: z.string(),
  url: z.string(),
  /** the app that declares this port, if any */
  app: z.string().optional(),
});

/** GET /workspaces/:owner/:name/ports (`den ports`). */
export const workspacePortsSchema = z.object({
  apps: z.array(workspaceAppSchema),
  ports: z.array(listeningPortSchema),
  /** false when the workspace's agent is not connected: `ports` is then empty, not "nothing listens" */
  detected: z.boolean(),
});
export type WorkspacePortsDto = z.infer<typeof workspacePortsSchema>;
