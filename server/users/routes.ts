import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import {
  addSshKeySchema,
  createdTokenSchema,
  createTokenSchema,
  createUserSchema,
  meSchema,
  okSchema,
  sshKeyIdParamsSchema,
  sshKeyListSchema,
  sshKeySchema,
  tokenIdParamsSchema,
  tokenListSchema,
  updateUserSchema,
  usernameParamsSchema,
  userListSchema,
  userSchema,
} from '../../protocol/users.ts';
import { createApiToken, listApiTokens, revokeApiToken } from '../auth/api-tokens.ts';
import { csrfTokenOf } from '../auth/plugin.ts';
import { principalOf } from '../http/auth-types.ts';
import type { DenBase } from '../base.ts';
import type { RevocationBus } from '../auth/revocations.ts';
import { addSshKey, deleteSshKey, listSshKeys } from './ssh-keys.ts';
import { createUser, deleteUser, getUser, getUserById, listUsers, toUserDto, updateUser } from './users.ts';

export interface UserRoutesOptions extends Pick<DenBase, 'store' | 'clock'> {
  revocations: RevocationBus;
}

/** The signed-in user's account, tokens and SSH keys, and user management for owners (under /api/v1). */
export async function userRoutes(fastify: FastifyInstance, deps: UserRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();

  // ---- the signed-in user ----

  app.get('/users/me', {
    config: { auth: 'user' },
    schema: { tags: ['users'], summary: 'The signed-in user (and the CSRF token of a cookie session)', response: { 200: meSchema } },
  }, async (request) => {
    const principal = principalOf(request);
    const user = await getUserById(deps.store.db, principal.userId);
    const csrfToken = csrfTokenOf(request);
    return { ...toUserDto(user), authenticatedVia: principal.via, ...(csrfToken ? { csrfToken } : {}) };
  });

  app.get('/users/me/tokens', {
    config: { auth: 'user' },
    schema: { tags: ['tokens'], summary: 'Your API tokens (never their secrets)', response: { 200: tokenListSchema } },
  }, async (request) => ({ tokens: await listApiTokens(deps.store.db, principalOf(request).userId) }));

  app.post('/users/me/tokens', {
    config: { auth: 'user' },
    schema: {
      tags: ['tokens'],
      summary: 'Create an API token; the secret is in this response only',
      body: createTokenSchema,
      response: { 201: createdTokenSchema },
    },
  }, async (request, reply) => {
    const token = await createApiToken(deps.store.db, deps.clock, principalOf(request).userId, request.body);
    reply.status(201);
    return token;
  });

  app.delete('/users/me/tokens/:id', {
    config: { auth: 'user' },
    schema: { tags: ['tokens'], summary: 'Revoke one of your API tokens', params: tokenIdParamsSchema, response: { 200: okSchema } },
  }, async (request) => {
    await revokeApiToken(deps.store.db, deps.clock, deps.revocations, principalOf(request).userId, request.params.id);
    return { ok: true as const };
  });

  app.get('/users/me/keys', {
    config: { auth: 'user' },
    schema: { tags: ['ssh-keys'], summary: 'Your SSH public keys', response: { 200: sshKeyListSchema } },
  }, async (request) => ({ keys: await listSshKeys(deps.store.db, principalOf(request).userId) }));

  app.post('/users/me/keys', {
    config: { auth: 'user' },
    schema: { tags: ['ssh-keys'], summary: 'Add an SSH public key (OpenSSH format)', body: addSshKeySchema, response: { 201: sshKeySchema } },
  }, async (request, reply) => {
    const key = await addSshKey(deps.store.db, deps.clock, principalOf(request).userId, request.body);
    reply.status(201);
    return key;
  });

  app.delete('/users/me/keys/:id', {
    config: { auth: 'user' },
    schema: { tags: ['ssh-keys'], summary: 'Remove one of your SSH public keys', params: sshKeyIdParamsSchema, response: { 200: okSchema } },
  }, async (request) => {
    await deleteSshKey(deps.store.db, deps.revocations, principalOf(request).userId, request.params.id);
    return { ok: true as const };
  });

  // ---- user management (owner role) ----

  app.get('/users', {
    config: { auth: 'owner' },
    schema: { tags: ['users'], summary: 'All users', response: { 200: userListSchema } },
  }, async () => ({ users: (await listUsers(deps.store.db)).map(toUserDto) }));

  app.post('/users', {
    config: { auth: 'owner' },
    schema: { tags: ['users'], summary: 'Create a user', body: createUserSchema, response: { 201: userSchema } },
  }, async (request, reply) => {
    const user = await createUser(deps.store.db, deps.clock, request.body);
    reply.status(201);
    return toUserDto(user);
  });

  app.get('/users/:username', {
    config: { auth: 'owner' },
    schema: { tags: ['users'], summary: 'One user', params: usernameParamsSchema, response: { 200: userSchema } },
  }, async (request) => toUserDto(await getUser(deps.store.db, request.params.username)));

  app.patch('/users/:username', {
    config: { auth: 'owner' },
    schema: {
      tags: ['users'],
      summary: 'Change a user\'s role, suspension, display name or password',
      params: usernameParamsSchema,
      body: updateUserSchema,
      response: { 200: userSchema },
    },
  }, async (request) => toUserDto(await updateUser(deps.store, deps.clock, deps.revocations, request.params.username, request.body)));

  app.delete('/users/:username', {
    config: { auth: 'owner' },
    schema: { tags: ['users'], summary: 'Delete a user with their tokens and keys', params: usernameParamsSchema, response: { 200: okSchema } },
  }, async (request) => {
    await deleteUser(deps.store, deps.revocations, request.params.username);
    return { ok: true as const };
  });
}
