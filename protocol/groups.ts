import { z } from 'zod';

/**
 * Wire schemas for groups of users (docs/groups.md): den's owners create them and set their
 * members; a workspace's owner grants a group the read-only view of the environment.
 */

/** Like a username (lowercase, digits, inner dashes), so `--group` and `USER` read alike. */
export const groupNameSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(32, 'must be at most 32 characters')
  .regex(/^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/, 'must use lowercase letters, digits and inner dashes only (for example backend or qa-team)');

export const createGroupSchema = z.object({
  name: groupNameSchema,
  description: z.string().max(200, 'must be at most 200 characters').optional(),
});
export type CreateGroupRequest = z.infer<typeof createGroupSchema>;

export const groupParamsSchema = z.object({ group: z.string().min(1).max(64) });
export const groupMemberParamsSchema = groupParamsSchema.extend({ user: z.string().min(1).max(64) });

export const groupSummarySchema = z.object({
  name: z.string(),
  description: z.string(),
  members: z.number().int(),
  createdBy: z.string(),
  createdAt: z.string(),
});
export type GroupSummaryDto = z.infer<typeof groupSummarySchema>;

export const groupMemberSchema = z.object({
  user: z.string(),
  addedBy: z.string(),
  addedAt: z.string(),
});
export type GroupMemberDto = z.infer<typeof groupMemberSchema>;

export const groupSchema = groupSummarySchema.omit({ members: true }).extend({
  members: z.array(groupMemberSchema),
});
export type GroupDto = z.infer<typeof groupSchema>;

export const groupListSchema = z.object({ groups: z.array(groupSummarySchema) });

/** GET /api/v1/group-events?group=NAME: the audit trail of groups, newest first (deleted groups' too). */
export const groupEventsQuerySchema = z.object({
  group: z.string().min(1).max(64).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});
export const groupEventSchema = z.object({
  id: z.number().int(),
  group: z.string(),
  ts: z.string(),
  kind: z.string(),
  by: z.string(),
  message: z.string(),
});
export const groupEventListSchema = z.object({ events: z.array(groupEventSchema) });
export type GroupEventDto = z.infer<typeof groupEventSchema>;
