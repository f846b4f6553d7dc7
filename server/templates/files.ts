import { AppError, type ValidationIssue } from '../../protocol/errors.ts';
import type { TemplateSpec } from '../../protocol/template.ts';
import { MAX_TEMPLATE_FILES, TEMPLATE_FILE } from '../../protocol/templates-api.ts';
import { readTemplateYaml } from './parse-thread.ts';

/**
 * Checks a pushed folder (relative path -> UTF-8 content) and parses its template.yaml
 * (parse-thread.ts: inline, or on a worker thread when large).
 * Paths are stored and later written back by `den templates pull`, so anything that could
 * escape the target folder there ('..', absolute paths, backslashes) is refused here.
 */
export async function templateFilesSpec(files: Record<string, string>, maxBytes: number): Promise<TemplateSpec> {
  const paths = Object.keys(files);
  if (paths.length > MAX_TEMPLATE_FILES) {
    throw new AppError('PAYLOAD_TOO_LARGE', `The template folder has ${paths.length} files; the limit is ${MAX_TEMPLATE_FILES}. Push only the files the template needs.`);
  }
  let total = 0;
  for (const path of paths) total += Buffer.byteLength(path, 'utf8') + Buffer.byteLength(files[path], 'utf8');
  if (total > maxBytes) {
    throw new AppError('PAYLOAD_TOO_LARGE', `The template files add up to ${total} bytes; the limit is ${maxBytes}. Remove large files from the folder.`);
  }
  const validations: ValidationIssue[] = [];
  for (const path of paths) {
    const problem = pathProblem(path);
    if (problem) validations.push({ field: `files[${JSON.stringify(path)}]`, detail: problem });
  }
  if (validations.length > 0) {
    throw new AppError('TEMPLATE_INVALID', `The template files are invalid: ${validations[0].field} ${validations[0].detail}`, { validations });
  }
  if (!Object.hasOwn(files, TEMPLATE_FILE)) {
    throw new AppError('TEMPLATE_INVALID', `The template folder has no ${TEMPLATE_FILE}. Add one at the top of the folder (see templates/starter).`, {
      validations: [{ field: `files[${JSON.stringify(TEMPLATE_FILE)}]`, detail: `Add ${TEMPLATE_FILE}.` }],
    });
  }
  return readTemplateYaml(files[TEMPLATE_FILE], { maxBytes });
}

/** Why a pushed path is not a safe relative path, or undefined when it is. */
export function pathProblem(path: string): string | undefined {
  if (/[\u0000-\u001f\u007f\\]/.test(path)) return 'contains a control character or a backslash; use plain relative paths with /.';
  if (path.startsWith('/')) return 'is absolute; use a path relative to the template folder.';
  const segments = path.split('/');
  if (segments.some((segment) => segment === '' || segment === '.' || segment === '..')) {
    return "has an empty, '.' or '..' segment; use a plain relative path such as scripts/db.js.";
  }
  return undefined;
}
