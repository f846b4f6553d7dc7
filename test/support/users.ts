import type { FastifyInstance } from 'fastify';
import type { RoleName } from '../../protocol/users.ts';

/**
 * Account helpers for tests of any domain: an owner, users of each role with API tokens, and a
 * small JSON wrapper over app.inject.
 */

export const TEST_PASSWORD = 'correct-horse-battery';

export interface TestUser {
  token: string;
  userId: string;
  username: string;
  password: string;
  role: RoleName;
}

export interface ApiResponse<T = any> {
  status: number;
  json: T;
  headers: Record<string, string | string[] | number | undefined>;
}

export interface Api {
  get<T = any>(url: string, headers?: Record<string, string>): Promise<ApiResponse<T>>;
  post<T = any>(url: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse<T>>;
  put<T = any>(url: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse<T>>;
  patch<T = any>(url: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse<T>>;
  delete<T = any>(url: string, headers?: Record<string, string>): Promise<ApiResponse<T>>;
  request<T = any>(method: string, url: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse<T>>;
}

/** Requests as the holder of `token` (anonymous without one). Bodies are JSON; so are answers, when they parse. */
export function api(app: FastifyInstance, token?: string): Api {
  const request = async <T>(method: string, url: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiResponse<T>> => {
    const response = await app.inject({
      method: method as 'GET',
      url,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
      ...(body === undefined ? {} : { payload: body as object }),
    });
    let json: any;
    try {
      json = response.body === '' ? undefined : JSON.parse(response.body);
    } catch {
      json = response.body;
    }
    return { status: response.statusCode, json, headers: response.headers };
  };
  return {
    get: (url, headers) => request('GET', url, undefined, headers),
    post: (url, body, headers) => request('POST', url, body ?? {}, headers),
    put: (url, body, headers) => request('PUT', url, body ?? {}, headers),
    patch: (url, body, headers) => request('PATCH', url, body ?? {}, headers),
    delete: (url, headers) => request('DELETE', url, undefined, headers),
    request,
  };
}

/** Creates the first user (the owner) and returns an API token for it. */
export async function setupOwner(app: FastifyInstance, username = 'owner'): Promise<TestUser> {
  const response = await api(app).post('/api/v1/setup/first-user', {
    username,
    password: TEST_PASSWORD,
    token: { name: 'test' },
  });
  if (response.status !== 201) throw new Error(`first-user setup failed: ${response.status} ${JSON.stringify(response.json)}`);
  return { token: response.json.token.token, userId: response.json.user.id, username, password: TEST_PASSWORD, role: 'owner' };
}

let userCounter = 0;

/** Creates a user of `role` through the owner API and signs them in for an API token. */
export async function createUserWithToken(
  app: FastifyInstance,
  ownerToken: string,
  role: RoleName = 'member',
  username = `${role === 'template-admin' ? 'tadmin' : role}-${++userCounter}`,
): Promise<TestUser> {
  const created = await api(app, ownerToken).post('/api/v1/users', { username, password: TEST_PASSWORD, role });
  if (created.status !== 201) throw new Error(`creating user ${username} failed: ${created.status} ${JSON.stringify(created.json)}`);
  const token = await loginForToken(app, username);
  return { token, userId: created.json.id, username, password: TEST_PASSWORD, role };
}

/** Signs in with the test password and returns a fresh API token. */
export async function loginForToken(app: FastifyInstance, username: string, password = TEST_PASSWORD): Promise<string> {
  const login = await api(app).post('/api/v1/auth/login', { username, password, token: { name: 'test' } });
  if (login.status !== 200) throw new Error(`login of ${username} failed: ${login.status} ${JSON.stringify(login.json)}`);
  return login.json.token.token;
}

/** Signs in with the session cookie, as a browser does; returns the Cookie header and CSRF token. */
export async function loginWithCookie(
  app: FastifyInstance,
  username: string,
  password = TEST_PASSWORD,
): Promise<{ cookie: string; csrfToken: string; setCookie: string }> {
  const response = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { username, password } });
  if (response.statusCode !== 200) throw new Error(`cookie login of ${username} failed: ${response.statusCode} ${response.body}`);
  const setCookie = String([response.headers['set-cookie']].flat()[0]);
  return { cookie: setCookie.split(';')[0], csrfToken: response.json().csrfToken, setCookie };
}
