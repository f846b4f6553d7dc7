import { z } from 'zod';
import { errorEnvelopeSchema } from './errors.ts';

/**
 * The user-facing exec websocket: GET /api/v1/workspaces/:owner/:name/exec (`den exec`).
 * The server relays it onto an exec channel of the agent link.
 *
 * Text messages are JSON control messages (`execClientMessageSchema` from the client,
 * `execServerMessageSchema` from the server). Binary messages are one stream byte followed by
 * the payload: 0 = stdin (client -> server), 1 = stdout, 2 = stderr (server -> client).
 * Flow control is the websocket's own (TCP) backpressure: the server stops reading the agent
 * channel while the client socket is behind, which stops the agent's credit, which pauses the
 * process.
 *
 * Order: client sends `start` first; the server answers `started` (the process runs) or `error`
 * and closes. After the process exits and all output was sent, the server sends `exit` and
 * closes with 1000. When the access that opened it is taken away (suspension, deletion, the
 * token revoked, logout, a password reset for cookie sessions, a role that no longer reaches
 * the workspace) the server sends `error` and closes with 4001; the command is abandoned.
 */
export { EXEC_STREAM, decodeExecData, encodeExecData } from './exec-frames.ts';
/** Largest JSON message in either direction (the `start` message with env and argv). */
export const MAX_EXEC_CONTROL_BYTES = 512 * 1024;

const envSchema = z.record(z.string().min(1).max(256), z.string().max(128 * 1024));

export const execStartSchema = z.object({
  type: z.literal('start'),
  command: z.array(z.string().max(128 * 1024)).min(1, 'Give a command to run.').max(4096),
  env: envSchema.optional(),
  cwd: z.string().max(4096).optional(),
  tty: z.object({ cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) }).optional(),
});
export type ExecStart = z.infer<typeof execStartSchema>;

export const execClientMessageSchema = z.discriminatedUnion('type', [
  execStartSchema,
  z.object({ type: z.literal('stdin_eof') }),
  z.object({ type: z.literal('signal'), signal: z.string().regex(/^SIG[A-Z0-9]+$/).max(32) }),
  z.object({ type: z.literal('resize'), cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) }),
]);
export type ExecClientMessage = z.infer<typeof execClientMessageSchema>;

export const execServerMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('started') }),
  z.object({ type: z.literal('exit'), code: z.number().int().min(0).max(255) }),
  z.object({ type: z.literal('error'), error: errorEnvelopeSchema.shape.error }),
]);
export type ExecServerMessage = z.infer<typeof execServerMessageSchema>;
