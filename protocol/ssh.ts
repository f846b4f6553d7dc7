import { z } from 'zod';

/** An SSH connection to a workspace (GET /workspaces/:owner/:name/ssh-sessions, `den show`). */
export const sshSessionSchema = z.object({
  id: z.string(),
  /** the den user it authenticated as */
  user: z.string(),
  /** the client's address (for a tunnel: the address that opened the websocket) */
  remoteAddress: z.string(),
  /** `ssh`: the SSH port; `tunnel`: `den ssh --stdio` through the HTTP(S) port */
  via: z.enum(['ssh', 'tunnel']),
  since: z.string(),
  /** sessions and forwards open now */
  channels: z.number().int(),
});
export type SshSessionDto = z.infer<typeof sshSessionSchema>;
export const sshSessionListSchema = z.object({ sessions: z.array(sshSessionSchema) });

/** How to reach the SSH gateway (GET /ssh): for `den ssh --host-key` and `den config-ssh`. */
export const sshInfoSchema = z.object({
  /** the SSH port, or null when this server has none (the tunnel through the HTTP port still works) */
  port: z.number().int().nullable(),
  hostKey: z.object({ publicKey: z.string(), fingerprint: z.string() }),
});
export type SshInfo = z.infer<typeof sshInfoSchema>;

/** Where `den port-forward` connects in the workspace: a port (on `host`, loopback by default) or a unix socket path. */
export const portForwardQuerySchema = z
  .object({
    port: z.coerce.number().int().min(1).max(65535).optional(),
    host: z.string().min(1).max(255).default('127.0.0.1'),
    path: z.string().min(1).max(4096).optional(),
  })
  .refine((query) => (query.port === undefined) !== (query.path === undefined), { message: 'Give either port or path.', path: ['port'] });

/**
 * The SSH tunnel and port-forward websockets carry raw bytes as binary messages. When den ends
 * one for a reason, it first sends one text message, the error envelope (`{ error: { code,
 * message } }`), then closes with `error`.
 */
export const SSH_SOCKET_CLOSE = { error: 4000 } as const;
