import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorEnvelopeSchema } from '../../protocol/errors.ts';
import { templateJsonSchema } from '../../protocol/template.ts';
import {
  activateTemplateBodySchema, deletedTemplateSchema, pushTemplateBodySchema, pushTemplateResponseSchema,
  templateDetailSchema, templateListSchema, templateNameParamsSchema, templateSummarySchema, templateVersionDetailSchema,
  templateVersionListSchema, templateVersionParamsSchema,
} from '../../protocol/templates-api.ts';
import { principalOf } from '../http/auth-types.ts';
import type { DenBase } from '../base.ts';
import {
  activateTemplateVersion, deleteTemplate, getTemplate, getTemplateVersion, listTemplates,
  listTemplateVersions, pushTemplateVersion,
} from './store.ts';

export type TemplateRoutesOptions = Pick<DenBase, 'store' | 'clock' | 'config'>;

/** Templates and their versions (under /api/v1). Reads: any user; writes: template admins. */
export async function templateRoutes(fastify: FastifyInstance, deps: TemplateRoutesOptions): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const tags = ['templates'];
  // Documents the error envelope in the OpenAPI description of every route.
  const errors = { 400: errorEnvelopeSchema, 401: errorEnvelopeSchema, 403: errorEnvelopeSchema, 404: errorEnvelopeSchema, 409: errorEnvelopeSchema, 413: errorEnvelopeSchema };

  app.get('/templates/schema', {
    config: { auth: 'public' },
    schema: { tags, summary: 'The template document as JSON Schema, for editors', response: { 200: z.record(z.string(), z.unknown()), ...errors } },
  }, async () => templateJsonSchema());

  app.get('/templates', {
    config: { auth: 'user' },
    schema: { tags, summary: 'List templates with their active version and usage', response: { 200: templateListSchema, ...errors } },
  }, async () => ({ templates: await listTemplates(deps.store.db) }));

  app.post('/templates', {
    config: { auth: 'template-admin' },
    // the folder's files plus the JSON around them; every other route keeps the app's default
    bodyLimit: deps.config.maxTemplateBytes + 64 * 1024,
    schema: {
      tags,
      summary: 'Push a template folder as a new immutable version (creates the template on first push)',
      body: pushTemplateBodySchema,
      response: { 200: pushTemplateResponseSchema, 201: pushTemplateResponseSchema, ...errors },
    },
  }, async (request, reply) => {
    const result = await pushTemplateVersion(deps.store.db, deps.clock, {
      ...request.body,
      userId: principalOf(request).userId,
      maxBytes: deps.config.maxTemplateBytes,
    });
    // 200: the files are the active version's, which is returned; 201: a version was stored
    reply.status(result.unchanged ? 200 : 201);
    return result;
  });

  app.get('/templates/:name', {
    config: { auth: 'user' },
    schema: { tags, summary: 'Show a template with its versions', params: templateNameParamsSchema, response: { 200: templateDetailSchema, ...errors } },
  }, async (request) => getTemplate(deps.store.db, request.params.name));

  app.delete('/templates/:name', {
    config: { auth: 'template-admin' },
    schema: { tags, summary: 'Delete a template that no live workspace uses', params: templateNameParamsSchema, response: { 200: deletedTemplateSchema, ...errors } },
  }, async (request) => {
    await deleteTemplate(deps.store.db, deps.clock, request.params.name, principalOf(request));
    return { name: request.params.name, deleted: true as const };
  });

  app.get('/templates/:name/versions', {
    config: { auth: 'user' },
    schema: { tags, summary: 'List the versions of a template, newest first', params: templateNameParamsSchema, response: { 200: templateVersionListSchema, ...errors } },
  }, async (request) => ({ versions: await listTemplateVersions(deps.store.db, request.params.name) }));

  app.get('/templates/:name/versions/:number', {
    config: { auth: 'user' },
    schema: {
      tags,
      summary: 'One version with its validated document and files (used by `den templates pull`)',
      params: templateVersionParamsSchema,
      response: { 200: templateVersionDetailSchema, ...errors },
    },
  }, async (request) => getTemplateVersion(deps.store.db, request.params.name, request.params.number));

  app.post('/templates/:name/activate', {
    config: { auth: 'template-admin' },
    schema: {
      tags,
      summary: 'Make a version the one new workspaces and `den update` use',
      params: templateNameParamsSchema,
      body: activateTemplateBodySchema,
      response: { 200: templateSummarySchema, ...errors },
    },
  }, async (request) => activateTemplateVersion(deps.store.db, deps.clock, request.params.name, request.body.version));
}
