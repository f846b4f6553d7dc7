import type { FastifyInstance, FastifyReply } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { AppError } from '../../protocol/errors.ts';
import { firstUserSchema, loginResultSchema, loginSchema, okSchema, setupStatusSchema, type LoginResult } from '../../protocol/users.ts';
import { principalOf } from '../http/auth-types.ts';
import type { AppContext } from '../http/app.ts';
import { createFirstUser, findUserByUsername, isSetupRequired, toUserDto, type UserRow } from '../users/users.ts';
import { createApiToken, revokeApiToken } from './api-tokens.ts';
import { verifyAgainstDummy, verifyPassword } from './passwords.ts';
import { sessionOf } from './plugin.ts';
import { createSession, deleteExpiredSessions, deleteSession, SESSION_COOKIE } from './sessions.ts';

/** First-user setup, login and logout (mounted under /api/v1). */
export async function authRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const den = (): AppContext => fastify.den;

  app.get('/setup', {
    config: { auth: 'public' },
    schema: { tags: ['auth'], summary: 'Whether den still needs its first user', response: { 200: setupStatusSchema } },
  }, async () => ({ setupRequired: await isSetupRequired(den().store.db) }));

  app.post('/setup/first-user', {
    config: { auth: 'public' },
    schema: {
      tags: ['auth'],
      summary: 'Create the first user (the owner); only while no user exists',
      body: firstUserSchema,
      response: { 201: loginResultSchema },
    },
  }, async (request, reply) => {
    const { token, ...input } = request.body;
    const user = await createFirstUser(den().store, den().clock, input);
    reply.status(201);
    return signIn(den(), reply, user, token);
  });

  app.post('/auth/login', {
    // limited by den().loginLimits in the handler: per address, per account and by scrypt work
    config: { auth: 'public' },
    schema: {
      tags: ['auth'],
      summary: 'Sign in: sets the session cookie, or returns a new API token when `token` is given',
      body: loginSchema,
      response: { 200: loginResultSchema },
    },
  }, async (request, reply) => {
    const { username, password, token } = request.body;
    const name = loginName(username);
    const user = await den().loginLimits.attempt({ address: request.ip, username: name }, async () => {
      const found = await findUserByUsername(den().store.db, name);
      const valid = found?.password_hash ? await verifyPassword(password, found.password_hash) : await verifyAgainstDummy(password);
      return found && valid ? found : undefined;
    });
    if (!user) {
      throw new AppError('INVALID_CREDENTIALS', 'The username or password is wrong. Check both and try again.');
    }
    if (user.suspended) {
      throw new AppError('USER_SUSPENDED', `The account '${user.username}' is suspended. Ask an owner of this den server to reactivate it.`);
    }
    return signIn(den(), reply, user, token);
  });

  app.post('/auth/logout', {
    config: { auth: 'user' },
    schema: { tags: ['auth'], summary: 'End this session, or revoke the API token used for this request', response: { 200: okSchema } },
  }, async (request, reply) => {
    const principal = principalOf(request);
    const session = sessionOf(request);
    if (session) {
      await deleteSession(den().store.db, den().revocations, { userId: principal.userId, idHash: session.idHash });
      reply.clearCookie(SESSION_COOKIE, { path: '/' });
    } else if (principal.tokenId) {
      await revokeApiToken(den().store.db, den().clock, den().revocations, principal.userId, principal.tokenId);
    }
    return { ok: true as const };
  });
}

async function signIn(
  den: AppContext,
  reply: FastifyReply,
  user: UserRow,
  tokenRequest: { name: string; expiresInDays?: number } | undefined,
): Promise<LoginResult> {
  if (tokenRequest) {
    return { user: toUserDto(user), token: await createApiToken(den.store.db, den.clock, user.id, tokenRequest) };
  }
  await deleteExpiredSessions(den.store.db, den.clock);
  const session = await createSession(den.store.db, den.clock, user.id, den.config.sessionTtlHours);
  reply.setCookie(SESSION_COOKIE, session.cookieValue, {
    httpOnly: true,
    sameSite: 'lax',
    secure: den.config.accessUrl.startsWith('https:'),
    path: '/',
    expires: session.expiresAt,
  });
  return { user: toUserDto(user), csrfToken: session.csrfToken };
}

function loginName(value: string): string {
  return value.trim().toLowerCase();
}
