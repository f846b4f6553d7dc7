import type { Role } from '../store/schema.ts';

/**
 * Who may call a route. Every route declares one in `config.auth`; registering a route without
 * it fails at start-up, so no route is accidentally public.
 *  - public: anyone (health, login, first-user setup, agent connect which checks its own token)
 *  - user: any signed-in user; object-level checks (own workspace) happen in the domain
 *  - template-admin: owner or template-admin
 *  - owner: the owner role only
 */
export type AuthLevel = 'public' | 'user' | 'template-admin' | 'owner';

export interface Principal {
  userId: string;
  username: string;
  role: Role;
  via: 'session' | 'token';
  /** set when via = 'token' */
  tokenId?: string;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: AuthLevel;
  }
  interface FastifyRequest {
    principal: Principal | null;
  }
}

/** The principal of an authenticated route (the auth hook guarantees it is set). */
export function principalOf(request: { principal: Principal | null }): Principal {
  if (!request.principal) throw new Error('principalOf called on a route without authentication');
  return request.principal;
}

export function isAdmin(principal: Principal): boolean {
  return principal.role === 'owner' || principal.role === 'template-admin';
}
