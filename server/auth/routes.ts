import type { FastifyInstance, FastifyReply } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { AppError } from '../../protocol/errors.ts';
import { firstUserSchema, loginResultSchema, loginSchema, okSchema, setupStatusSchema, type LoginResult } from '../../protocol/users.ts';
import { principalOf } from '../http/auth-types.ts';
import type { DenBase } from '../base.ts';
import type { LoginLimits } from './login-limits.ts';
import type { RevocationBus } from './revocations.ts';
import { createFirstUser, findUserByUsername, isSetupRequired, toUserDto, type UserRow } from '../users/users.ts';
import { deleteAppTokensOfUser } from '../apps/app-tokens.ts';
import { appReturnTarget } from '../apps/return-target.ts';
import { createApiToken, revokeApiToken } from './api-tokens.ts';
import { verifyAgainstDummy, verifyPassword } from './passwords.ts';
import { sessionOf } from './plugin.ts';
import { createSession, deleteExpiredSessions, deleteSession, SESSION_COOKIE } from './sessions.ts';

export interface AuthRoutesOptions extends Pick<DenBase, 'store' | 'clock' | 'config'> {
  loginLimits: LoginLimits;
  revocations: RevocationBus;
}

/** First-user setup, login and logout (mounted under /api/v1). */
export async function authRoutes(fastify: FastifyInstance, deps: AuthRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();

  app.get('/setup', {
    config: { auth: 'public' },
    schema: { tags: ['auth'], summary: 'Whether den still needs its first user', response: { 200: setupStatusSchema } },
  }, async () => ({ setupRequired: await isSetupRequired(deps.store.db) }));

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
    const user = await createFirstUser(deps.store, deps.clock, input);
    reply.status(201);
    return signIn(deps, reply, user, token);
  });

  app.post('/auth/login', {
    // limited by deps.loginLimits in the handler: per address, per account and by scrypt work
    config: { auth: 'public' },
    schema: {
      tags: ['auth'],
      summary: 'Sign in: sets the session cookie, or returns a new API token when `token` is given',
      body: loginSchema,
      response: { 200: loginResultSchema },
    },
  }, async (request, reply) => {
    const { username, password, token, next } = request.body;
    const name = loginName(username);
    const user = await deps.loginLimits.attempt({ address: request.ip, username: name }, async () => {
      const found = await findUserByUsername(deps.store.db, name);
      const valid = found?.password_hash ? await verifyPassword(password, found.password_hash) : await verifyAgainstDummy(password);
      return found && valid ? found : undefined;
    });
    if (!user) {
      // On a new server every name is unknown: say so rather than blaming what was typed.
      if (await isSetupRequired(deps.store.db)) throw setupRequired(deps.config.accessUrl);
      throw new AppError('INVALID_CREDENTIALS', 'The username or password is wrong. Check both and try again.');
    }
    if (user.suspended) {
      throw new AppError('USER_SUSPENDED', `The account '${user.username}' is suspended. Ask an owner of this den server to reactivate it.`);
    }
    const result = await signIn(deps, reply, user, token);
    // a browser sent to sign in by an app host goes back there, and nowhere else (no open redirect)
    const back = token ? undefined : appReturnTarget(next, deps.config);
    return back ? { ...result, next: back } : result;
  });

  app.post('/auth/logout', {
    config: { auth: 'user' },
    schema: { tags: ['auth'], summary: 'End this session, or revoke the API token used for this request', response: { 200: okSchema } },
  }, async (request, reply) => {
    const principal = principalOf(request);
    const session = sessionOf(request);
    if (session) {
      await deleteSession(deps.store.db, deps.revocations, { userId: principal.userId, idHash: session.idHash });
      // the app hosts' cookies were issued through a session of this user: signing out ends them
      // (all of this user's: den does not record which session issued which, docs/apps.md)
      await deleteAppTokensOfUser(deps.store.db, principal.userId);
      reply.clearCookie(SESSION_COOKIE, { path: '/' });
    } else if (principal.tokenId) {
      await revokeApiToken(deps.store.db, deps.clock, deps.revocations, principal.userId, principal.tokenId);
    }
    return { ok: true as const };
  });
}

async function signIn(
  deps: AuthRoutesOptions,
  reply: FastifyReply,
  user: UserRow,
  tokenRequest: { name: string; expiresInDays?: number } | undefined,
): Promise<LoginResult> {
  if (tokenRequest) {
    return { user: toUserDto(user), token: await createApiToken(deps.store.db, deps.clock, user.id, tokenRequest) };
  }
  await deleteExpiredSessions(deps.store.db, deps.clock);
  const session = await createSession(deps.store.db, deps.clock, user.id, deps.config.sessionTtlHours);
  reply.setCookie(SESSION_COOKIE, session.cookieValue, {
    httpOnly: true,
    sameSite: 'lax',
    secure: deps.config.accessUrl.startsWith('https:'),
    path: '/',
    expires: session.expiresAt,
  });
  return { user: toUserDto(user), csrfToken: session.csrfToken };
}

function setupRequired(accessUrl: string): AppError {
  return new AppError(
    'SETUP_REQUIRED',
    `This den server has no users yet. Create the first (owner) account: open ${accessUrl}/ in a browser, or run \`den login ${accessUrl} --first-user-username NAME --first-user-password PASSWORD\`.`,
  );
}

function loginName(value: string): string {
  return value.trim().toLowerCase();
}
