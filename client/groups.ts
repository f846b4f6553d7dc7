import { groupEventListSchema, groupListSchema, groupSchema, type CreateGroupRequest } from '../protocol/groups.ts';
import { segment, type Transport } from './http.ts';

/** Groups of users (docs/groups.md): /api/v1/groups and /api/v1/group-events. */
export class GroupsApi {
  readonly #transport: Transport;

  constructor(transport: Transport) {
    this.#transport = transport;
  }

  list() {
    return this.#transport.request('GET', '/api/v1/groups', { schema: groupListSchema });
  }

  get(name: string) {
    return this.#transport.request('GET', `/api/v1/groups/${segment(name)}`, { schema: groupSchema });
  }

  create(body: CreateGroupRequest) {
    return this.#transport.request('POST', '/api/v1/groups', { body, schema: groupSchema });
  }

  delete(name: string) {
    return this.#transport.request('DELETE', `/api/v1/groups/${segment(name)}`);
  }

  addMember(name: string, user: string) {
    return this.#transport.request('PUT', `/api/v1/groups/${segment(name)}/members/${segment(user)}`, { body: {}, schema: groupSchema });
  }

  removeMember(name: string, user: string) {
    return this.#transport.request('DELETE', `/api/v1/groups/${segment(name)}/members/${segment(user)}`);
  }

  /** The groups' history, newest first (one group's, also after it was deleted, with `group`). */
  events(query: { group?: string; limit?: number } = {}) {
    return this.#transport.request('GET', '/api/v1/group-events', { query, schema: groupEventListSchema });
  }
}
