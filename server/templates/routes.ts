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
import {
  activateTemplateVersion, deleteTemplate, getTemplate, getTemplateVersion, listTemplates,
  listTemplateVersions, pushTemplateVersion,
} from './store.ts';

/** Templates and their versions (under /api/v1). Reads: any user; writes: template admins. */
export async function templateRoutes(fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const den = () => fastify.den;
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
  }, async () => ({ templates: await listTemplates(den().store.db) }));

  app.post('/templates', {
    config: { auth: 'template-admin' },
    // the folder's files plus the JSON around them; every other route keeps the app's default
    bodyLimit: den().config.maxTemplateBytes + 64 * 1024,
    schema: {
      tags,
      summary: 'Push a template folder as a new immutable version (creates the template on first push)',
      body: pushTemplateBodySchema,
      response: { 201: pushTemplateResponseSchema, ...errors },
    },
  }, async (request, reply) => {
    const result = await pushTemplateVersion(den().store.db, den().clock, {
      ...request.body,
      userId: principalOf(request).userId,
      maxBytes: den().config.maxTemplateBytes,
    });
    reply.status(201);
    return result;
  });

  app.get('/templates/:name', {
    config: { auth: 'user' },
    schema: { tags, summary: 'Show a template with its versions', params: templateNameParamsSchema, response: { 200: templateDetailSchema, ...errors } },
  }, async (request) => getTemplate(den().store.db, request.params.name));

  app.delete('/templates/:name', {
    config: { auth: 'template-admin' },
    schema: { tags, summary: 'Delete a template that no live workspace uses', params: templateNameParamsSchema, response: { 200: deletedTemplateSchema, ...errors } },
  }, async (request) => {
    await deleteTemplate(den().store.db, den().clock, request.params.name, principalOf(request));
    return { name: request.params.name, deleted: true as const };
  });

  app.get('/templates/:name/versions', {
    config: { auth: 'user' },
    schema: { tags, summary: 'List the versions of a template, newest first', params: templateNameParamsSchema, response: { 200: templateVersionListSchema, ...errors } },
  }, async (request) => ({ versions: await listTemplateVersions(den().store.db, request.params.name) }));

  app.get('/templates/:name/versions/:number', {
    config: { auth: 'user' },
    schema: {
      tags,
      summary: 'One version with its validated document and files (used by `den templates pull`)',
      params: templateVersionParamsSchema,
      response: { 200: templateVersionDetailSchema, ...errors },
    },
  }, async (request) => getTemplateVersion(den().store.db, request.params.name, request.params.number));

  app.post('/templates/:name/activate', {
    config: { auth: 'template-admin' },
    schema: {
      tags,
      summary: 'Make a version the one new workspaces and `den update` use',
      params: templateNameParamsSchema,
      body: activateTemplateBodySchema,
      response: { 200: templateSummarySchema, ...errors },
    },
  }, async (request) => activateTemplateVersion(den().store.db, den().clock, request.params.name, request.body.version));
}
