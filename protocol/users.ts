import { z } from 'zod';

/**
 * Wire schemas for accounts: first-user setup, login/logout, the signed-in user, API tokens,
 * SSH keys and user management. Shared by the server routes, the client, the CLI and the web UI.
 */

export const roleSchema = z.enum(['owner', 'template-admin', 'member']);
export type RoleName = z.infer<typeof roleSchema>;

// Messages are predicates: the error handler prefixes the field ("body.password must be ...").

/** DNS-label-safe, so a username can appear in hostnames (`app--ws--owner.example.com`). */
export const usernameSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(32, 'must be at most 32 characters')
  .regex(
    /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/,
    'must use lowercase letters, digits and inner dashes only (for example alice or ci-bot)',
  )
  // `/api/v1/users/me` is the signed-in user, so no account may be called "me".
  .refine((name) => name !== 'me', 'must not be "me", which is reserved; choose another username');

export const PASSWORD_MIN_LENGTH = 8;
export const passwordSchema = z
  .string()
  .min(PASSWORD_MIN_LENGTH, `must be at least ${PASSWORD_MIN_LENGTH} characters long; choose a longer password`)
  .max(1024, 'must be at most 1024 characters long');

export const displayNameSchema = z.string().trim().max(128, 'must be at most 128 characters');

export const userSchema = z.object({
  id: z.string(),
  username: z.string(),
  displayName: z.string(),
  role: roleSchema,
  suspended: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type UserDto = z.infer<typeof userSchema>;

export const userListSchema = z.object({ users: z.array(userSchema) });

/** GET /users/me: the user plus how they authenticated; csrfToken only for cookie sessions. */
export const meSchema = userSchema.extend({
  authenticatedVia: z.enum(['session', 'token']),
  csrfToken: z.string().optional(),
});
export type MeDto = z.infer<typeof meSchema>;

// ---- API tokens ----

export const tokenNameSchema = z
  .string()
  .trim()
  .min(1, 'must not be empty')
  .max(64, 'must be at most 64 characters');

export const createTokenSchema = z.object({
  name: tokenNameSchema,
  /** omitted: the token does not expire */
  expiresInDays: z.number().int().min(1).max(3650).optional(),
});
export type CreateTokenRequest = z.infer<typeof createTokenSchema>;

export const apiTokenSchema = z.object({
  id: z.string(),
  name: z.string(),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
  lastUsedAt: z.string().nullable(),
});
export type ApiTokenDto = z.infer<typeof apiTokenSchema>;

/** Returned once, at creation; the secret is never shown again. */
export const createdTokenSchema = apiTokenSchema.extend({ token: z.string() });
export type CreatedTokenDto = z.infer<typeof createdTokenSchema>;

export const tokenListSchema = z.object({ tokens: z.array(apiTokenSchema) });

export const tokenIdParamsSchema = z.object({ id: z.string().min(1).max(64) });

// ---- setup and login ----

export const setupStatusSchema = z.object({ setupRequired: z.boolean() });

export const loginSchema = z.object({
  username: z.string().min(1).max(64),
  password: z.string().min(1).max(1024),
  /** ask for an API token (the CLI) instead of a session cookie (the browser) */
  token: createTokenSchema.optional(),
  /**
   * the den address the sign-in page was opened for (`/login?next=`), to return to an app; one den
   * will not go back to (too long, not a string) is dropped rather than failing the sign-in
   */
  next: z.string().max(4096).optional().catch(undefined),
});
export type LoginRequest = z.infer<typeof loginSchema>;

export const firstUserSchema = z.object({
  username: usernameSchema,
  password: passwordSchema,
  displayName: displayNameSchema.optional(),
  token: createTokenSchema.optional(),
});
export type FirstUserRequest = z.infer<typeof firstUserSchema>;

/** Login and first-user setup answer alike: the user, then a token (CLI) or a CSRF token (cookie). */
export const loginResultSchema = z.object({
  user: userSchema,
  token: createdTokenSchema.optional(),
  csrfToken: z.string().optional(),
  /** where the browser goes now: the `next` of the request when it leads back to an app of this den (a path on den) */
  next: z.string().optional(),
});
export type LoginResult = z.infer<typeof loginResultSchema>;

export const okSchema = z.object({ ok: z.literal(true) });

// ---- SSH keys ----

export const addSshKeySchema = z.object({
  /** defaults to the key's comment, or its type */
  name: z.string().trim().max(128).optional(),
  publicKey: z.string().min(1).max(16 * 1024),
});
export type AddSshKeyRequest = z.infer<typeof addSshKeySchema>;

export const sshKeySchema = z.object({
  id: z.string(),
  name: z.string(),
  type: z.string(),
  publicKey: z.string(),
  /** as `ssh-keygen -lf` prints it: SHA256:base64-without-padding */
  fingerprint: z.string(),
  createdAt: z.string(),
});
export type SshKeyDto = z.infer<typeof sshKeySchema>;

export const sshKeyListSchema = z.object({ keys: z.array(sshKeySchema) });

export const sshKeyIdParamsSchema = z.object({ id: z.string().min(1).max(64) });

// ---- user management (owner role) ----

export const createUserSchema = z.object({
  username: usernameSchema,
  password: passwordSchema,
  role: roleSchema.default('member'),
  displayName: displayNameSchema.optional(),
});
export type CreateUserRequest = z.infer<typeof createUserSchema>;

export const updateUserSchema = z
  .object({
    role: roleSchema.optional(),
    suspended: z.boolean().optional(),
    displayName: displayNameSchema.optional(),
    password: passwordSchema.optional(),
  })
  .refine((value) => Object.values(value).some((v) => v !== undefined), {
    message: 'must change at least one of role, suspended, displayName or password',
  });
export type UpdateUserRequest = z.infer<typeof updateUserSchema>;

export const usernameParamsSchema = z.object({ username: z.string().min(1).max(64) });
