import { z } from 'zod';
import type { TemplateSpec } from './template.ts';

/** Request and response bodies of /api/v1/templates (the template document itself is template.ts). */

/** The file every template folder must contain. */
export const TEMPLATE_FILE = 'template.yaml';
/** More files than this in one push is a mistake (a node_modules folder), not a template. */
export const MAX_TEMPLATE_FILES = 1000;
export const MAX_TEMPLATE_PATH_LENGTH = 500;

export const pushTemplateBodySchema = z.strictObject({
  /** relative path (with '/') -> UTF-8 content; must include template.yaml */
  files: z.record(z.string().min(1).max(MAX_TEMPLATE_PATH_LENGTH), z.string()),
  message: z.string().max(2000).optional(),
  /** make the new version active; defaults to true for a template's first version */
  activate: z.boolean().optional(),
});
export type PushTemplateBody = z.infer<typeof pushTemplateBodySchema>;

export const templateSummarySchema = z.object({
  name: z.string(),
  displayName: z.string(),
  description: z.string(),
  icon: z.string().nullable(),
  activeVersion: z.number().int().nullable(),
  versions: z.number().int(),
  /** live workspaces (any version) created from the template */
  workspaces: z.number().int(),
  createdBy: z.string().nullable(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type TemplateSummary = z.infer<typeof templateSummarySchema>;

export const templateVersionSummarySchema = z.object({
  template: z.string(),
  number: z.number().int(),
  message: z.string(),
  active: z.boolean(),
  /** live workspaces pinned to this version */
  workspaces: z.number().int(),
  createdBy: z.string().nullable(),
  createdAt: z.string(),
});
export type TemplateVersionSummary = z.infer<typeof templateVersionSummarySchema>;

/** A version with its validated document and every pushed file (what `den templates pull` writes). */
export const templateVersionDetailSchema = templateVersionSummarySchema.extend({
  id: z.string(),
  spec: z.record(z.string(), z.unknown()).describe('The validated template document, defaults applied (see GET /api/v1/templates/schema).'),
  files: z.record(z.string(), z.string()),
});
export type TemplateVersionDetail = Omit<z.infer<typeof templateVersionDetailSchema>, 'spec'> & { spec: TemplateSpec };

export const templateDetailSchema = templateSummarySchema.extend({
  versionList: z.array(templateVersionSummarySchema),
});
export type TemplateDetail = z.infer<typeof templateDetailSchema>;

export const pushTemplateResponseSchema = z.object({
  template: templateSummarySchema,
  version: templateVersionSummarySchema,
  /** true when this push created the template */
  created: z.boolean(),
  /** true when the files were those of the active version: nothing was stored, `version` is that one */
  unchanged: z.boolean().default(false),
});
export type PushTemplateResponse = z.infer<typeof pushTemplateResponseSchema>;

export const templateNameParamsSchema = z.object({ name: z.string().min(1).max(200) });
export const templateVersionParamsSchema = z.object({
  name: z.string().min(1).max(200),
  number: z.coerce.number().int().positive().max(2 ** 31 - 1),
});
export const activateTemplateBodySchema = z.strictObject({ version: z.number().int().positive().max(2 ** 31 - 1) });

export const templateListSchema = z.object({ templates: z.array(templateSummarySchema) });
export const templateVersionListSchema = z.object({ versions: z.array(templateVersionSummarySchema) });
export const deletedTemplateSchema = z.object({ name: z.string(), deleted: z.literal(true) });
