import { z } from 'zod';
import { checkTemplate } from './template-checks.ts';
import { templateFieldsSchema } from './template-fields.ts';

export * from './template-fields.ts';
export { parseBytes, parseCpu, parseDuration, formatBytes } from './template-units.ts';

/**
 * The template document (`template.yaml`) as callers parse it: the field-by-field schema of
 * template-fields.ts, then the cross-field rules of template-checks.ts.
 */
export const templateSchema = templateFieldsSchema.superRefine((spec, ctx) => {
  for (const issue of checkTemplate(spec)) ctx.addIssue({ code: 'custom', message: issue.message, path: issue.path });
});

/**
 * The template schema as JSON Schema, for editors and `den templates schema`. Draft-07 because
 * that is the draft the YAML language server (VS Code, JetBrains) supports best. It describes
 * the input (defaults make fields optional); cross-field rules are checked on push only.
 */
export function templateJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(templateFieldsSchema, { io: 'input', unrepresentable: 'any', target: 'draft-07' }) as Record<string, unknown>;
  return {
    ...schema,
    $id: 'https://den.dev/schemas/template.json',
    title: 'den template',
    description: 'A den template (template.yaml): parameters, the workspace, its environment services and lifecycle defaults.',
  };
}
