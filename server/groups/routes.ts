import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorEnvelopeSchema } from '../../protocol/errors.ts';
import {
  createGroupSchema, groupEventListSchema, groupEventsQuerySchema, groupListSchema, groupMemberParamsSchema, groupParamsSchema, groupSchema,
} from '../../protocol/groups.ts';
import type { DenBase } from '../base.ts';
import { recordGroupChangeOnGrants } from '../environments/grants.ts';
import { principalOf } from '../http/auth-types.ts';
import { addGroupMember, createGroup, deleteGroup, getGroup, listGroupEvents, listGroups, removeGroupMember } from './groups.ts';

export type GroupRoutesOptions = Pick<DenBase, 'store' | 'clock'>;

const errors = { 400: errorEnvelopeSchema, 401: errorEnvelopeSchema, 403: errorEnvelopeSchema, 404: errorEnvelopeSchema, 409: errorEnvelopeSchema };
const tags = ['groups'];

/**
 * /api/v1/groups: every signed-in user may list and read groups (to grant one an environment);
 * den's owners create and delete them and set their members. Each change is in the groups'
 * history (/api/v1/group-events) and, for a group with grants, among the events of each
 * workspace it may see, so the workspace's owner learns who sees the environment now.
 */
export async function groupRoutes(fastify: FastifyInstance, deps: GroupRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const db = deps.store.db;

  app.get('/groups', {
    config: { auth: 'user' },
    schema: { tags, summary: 'All groups with their member counts', response: { 200: groupListSchema, ...errors } },
  }, async () => ({ groups: await listGroups(db) }));

  app.post('/groups', {
    config: { auth: 'owner' },
    schema: { tags, summary: 'Create a group', body: createGroupSchema, response: { 201: groupSchema, ...errors } },
  }, async (request, reply) => {
    const group = await createGroup(db, deps.clock, request.body, principalOf(request).username);
    reply.status(201);
    return group;
  });

  app.get('/groups/:group', {
    config: { auth: 'user' },
    schema: { tags, summary: 'One group with its members', params: groupParamsSchema, response: { 200: groupSchema, ...errors } },
  }, async (request) => getGroup(db, request.params.group));

  app.delete('/groups/:group', {
    config: { auth: 'owner' },
    schema: { tags, summary: 'Delete a group; its members lose the grants they had through it at once', params: groupParamsSchema, response: { 204: z.null().describe('the group is gone'), ...errors } },
  }, async (request, reply) => {
    const by = principalOf(request).username;
    const name = request.params.group;
    await getGroup(db, name); // 404 before any workspace hears of it
    await recordGroupChangeOnGrants(db, deps.clock, name, `${by} deleted the group ${name}: its members no longer see this environment through it.`, { by, change: 'deleted' });
    await deleteGroup(db, deps.clock, name, by);
    return reply.code(204).send(null);
  });

  app.put('/groups/:group/members/:user', {
    config: { auth: 'owner' },
    schema: { tags, summary: 'Add a user to a group (adding twice keeps the first addition)', params: groupMemberParamsSchema, response: { 200: groupSchema, ...errors } },
  }, async (request) => {
    const by = principalOf(request).username;
    const { group, user } = request.params;
    const { group: updated, added } = await addGroupMember(db, deps.clock, group, user, by);
    if (added) await recordGroupChangeOnGrants(db, deps.clock, group, `${by} added ${user} to the group ${group}, who now sees this environment read-only.`, { by, change: 'member-added', user });
    return updated;
  });

  app.delete('/groups/:group/members/:user', {
    config: { auth: 'owner' },
    schema: { tags, summary: 'Remove a user from a group; what they saw through it closes at once', params: groupMemberParamsSchema, response: { 204: z.null().describe('the membership is gone'), ...errors } },
  }, async (request, reply) => {
    const by = principalOf(request).username;
    const { group, user } = request.params;
    await removeGroupMember(db, deps.clock, group, user, by);
    await recordGroupChangeOnGrants(db, deps.clock, group, `${by} removed ${user} from the group ${group}: they no longer see this environment through it.`, { by, change: 'member-removed', user });
    return reply.code(204).send(null);
  });

  app.get('/group-events', {
    config: { auth: 'owner' },
    schema: { tags, summary: 'The history of groups, newest first (of one group with ?group=, also after it was deleted)', querystring: groupEventsQuerySchema, response: { 200: groupEventListSchema, ...errors } },
  }, async (request) => ({ events: await listGroupEvents(db, request.query) }));
}
