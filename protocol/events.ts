import { z } from 'zod';
import { lifecycleStateSchema } from './agent.ts';
import { errorEnvelopeSchema } from './errors.ts';

/**
 * The client event stream (`GET /api/v1/events`, server-sent events): what changed about the
 * workspaces a caller may see. Each SSE message has `id:` (monotonic per server process),
 * `event:` (the `type` below) and `data:` (this JSON). A stream that falls too far behind ends
 * with a `dropped` event; a stream whose access is revoked ends with a `revoked` event.
 */

const workspaceRef = { workspaceId: z.string(), at: z.string() };

export const workspaceStatusEventSchema = z.object({
  type: z.literal('workspace.status'),
  ...workspaceRef,
  status: z.string(),
});

export const buildEventSchema = z.object({
  type: z.literal('build'),
  ...workspaceRef,
  buildId: z.string(),
  number: z.number().int(),
  transition: z.string(),
  state: z.enum(['queued', 'running', 'succeeded', 'failed', 'canceled']),
  /** the step that just began or ended, with its state */
  step: z.object({ name: z.string(), state: z.enum(['running', 'succeeded', 'failed']) }).optional(),
});

export const agentEventSchema = z.object({
  type: z.literal('agent'),
  ...workspaceRef,
  /** which agent, when not the workspace's main one: the environment service it runs beside */
  agent: z.string().optional(),
  /** connected/disconnected, the agent's lifecycle state, or the reconciler's health verdict */
  state: z.union([z.enum(['connected', 'disconnected', 'down', 'recovered']), lifecycleStateSchema]),
  message: z.string().optional(),
});

/** Events about a workspace: published on the server's event bus and delivered to subscribers who may see it. */
export const workspaceEventSchema = z.discriminatedUnion('type', [workspaceStatusEventSchema, buildEventSchema, agentEventSchema]);
export type WorkspaceEvent = z.infer<typeof workspaceEventSchema>;

/** The last event of a stream the server ended (too slow, or access revoked). */
export const streamEndEventSchema = z.object({ type: z.enum(['dropped', 'revoked']), ...errorEnvelopeSchema.shape });
export type StreamEndEvent = z.infer<typeof streamEndEventSchema>;

export const clientEventSchema = z.union([workspaceEventSchema, streamEndEventSchema]);
export type ClientEvent = z.infer<typeof clientEventSchema>;
