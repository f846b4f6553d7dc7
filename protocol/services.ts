import { z } from 'zod';
import { workspaceParamsSchema } from './workspaces.ts';

/** GET /api/v1/workspaces/:owner/:name/services/:service/logs */
export const serviceLogsParamsSchema = workspaceParamsSchema.extend({ service: z.string().min(1).max(63) });

export const serviceLogsQuerySchema = z.object({
  /** keep streaming live lines until the service ends or the client goes away */
  follow: z.enum(['0', '1', 'true', 'false']).optional(),
  /** start with only the last N lines (default: everything the runtime kept) */
  tail: z.coerce.number().int().min(0).max(100_000).optional(),
});

/** One line of a service's output, as one NDJSON line of the response. */
export const serviceLogLineSchema = z.object({
  stream: z.enum(['stdout', 'stderr']),
  line: z.string(),
});
export type ServiceLogLine = z.infer<typeof serviceLogLineSchema>;
