import {
  createdTokenSchema,
  loginResultSchema,
  meSchema,
  setupStatusSchema,
  sshKeyListSchema,
  sshKeySchema,
  tokenListSchema,
  userListSchema,
  userSchema,
  type AddSshKeyRequest,
  type CreateTokenRequest,
  type CreateUserRequest,
  type FirstUserRequest,
  type LoginRequest,
  type UpdateUserRequest,
} from '../protocol/users.ts';
import { sshInfoSchema } from '../protocol/ssh.ts';
import { Transport, segment, type TransportOptions } from './http.ts';
import { EnvironmentsApi } from './environments.ts';
import { GroupsApi } from './groups.ts';
import { TemplatesApi } from './templates.ts';
import { WorkspacesApi } from './workspaces.ts';

export { DenApiError, isDenApiError } from './errors.ts';
export type { TransportOptions as DenClientOptions } from './http.ts';

/**
 * The typed client of den's HTTP API: one method per route, responses parsed with the zod
 * schemas from protocol/, errors thrown as DenApiError with the server's sentence.
 * Runs in Node 24 and in browsers (fetch only). Templates and workspaces live in their own
 * classes (`client.templates`, `client.workspaces`) to keep each file about one domain.
 */
export class DenClient {
  readonly transport: Transport;
  readonly templates: TemplatesApi;
  readonly workspaces: WorkspacesApi;
  readonly environments: EnvironmentsApi;
  readonly groups: GroupsApi;

  constructor(options: TransportOptions) {
    this.transport = new Transport(options);
    this.templates = new TemplatesApi(this.transport);
    this.workspaces = new WorkspacesApi(this.transport);
    this.environments = new EnvironmentsApi(this.transport);
    this.groups = new GroupsApi(this.transport);
  }

  get url(): string {
    return this.transport.baseUrl;
  }

  /** A client for the same server with another token (after login). */
  withToken(token: string): DenClient {
    return new DenClient({ url: this.transport.baseUrl, token });
  }

  // ---- setup and sessions ----

  setupStatus(signal?: AbortSignal) {
    return this.transport.request('GET', '/api/v1/setup', { schema: setupStatusSchema, signal });
  }

  createFirstUser(body: FirstUserRequest) {
    return this.transport.request('POST', '/api/v1/setup/first-user', { body, schema: loginResultSchema });
  }

  login(body: LoginRequest) {
    return this.transport.request('POST', '/api/v1/auth/login', { body, schema: loginResultSchema });
  }

  /** Ends the session; with a token, revokes that token. */
  logout() {
    return this.transport.request('POST', '/api/v1/auth/logout', { body: {} });
  }

  me(signal?: AbortSignal) {
    return this.transport.request('GET', '/api/v1/users/me', { schema: meSchema, signal });
  }

  // ---- API tokens ----

  listTokens() {
    return this.transport.request('GET', '/api/v1/users/me/tokens', { schema: tokenListSchema });
  }

  createToken(body: CreateTokenRequest) {
    return this.transport.request('POST', '/api/v1/users/me/tokens', { body, schema: createdTokenSchema });
  }

  revokeToken(id: string) {
    return this.transport.request('DELETE', `/api/v1/users/me/tokens/${segment(id)}`, {});
  }

  // ---- SSH keys ----

  /** The SSH gateway's host key and port. */
  sshInfo() {
    return this.transport.request('GET', '/api/v1/ssh', { schema: sshInfoSchema });
  }

  listSshKeys() {
    return this.transport.request('GET', '/api/v1/users/me/keys', { schema: sshKeyListSchema });
  }

  addSshKey(body: AddSshKeyRequest) {
    return this.transport.request('POST', '/api/v1/users/me/keys', { body, schema: sshKeySchema });
  }

  removeSshKey(id: string) {
    return this.transport.request('DELETE', `/api/v1/users/me/keys/${segment(id)}`, {});
  }

  // ---- users (owner role) ----

  listUsers() {
    return this.transport.request('GET', '/api/v1/users', { schema: userListSchema });
  }

  getUser(username: string) {
    return this.transport.request('GET', `/api/v1/users/${segment(username)}`, { schema: userSchema });
  }

  createUser(body: CreateUserRequest) {
    return this.transport.request('POST', '/api/v1/users', { body, schema: userSchema });
  }

  updateUser(username: string, body: UpdateUserRequest) {
    return this.transport.request('PATCH', `/api/v1/users/${segment(username)}`, { body, schema: userSchema });
  }

  deleteUser(username: string) {
    return this.transport.request('DELETE', `/api/v1/users/${segment(username)}`, {});
  }
}
