import { isAlias, isMap, isNode, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import { AppError, type ValidationIssue } from '../../protocol/errors.ts';
import { templateSchema, type TemplateSpec } from '../../protocol/template.ts';
import { TEMPLATE_FILE } from '../../protocol/templates-api.ts';
import { describeIssues, fieldPath, type TemplateProblem } from './issues.ts';
import { checkExpressions } from './references.ts';
import { checkYamlDocument, checkYamlShape } from './yaml-bounds.ts';

/**
 * template.yaml -> validated TemplateSpec. Every failure is an AppError: TEMPLATE_YAML_INVALID
 * for syntax (with the line), TEMPLATE_INVALID with one validation per problem, each carrying
 * the field path, a sentence saying how to fix it, and the line/column it points at. The YAML
 * Document is kept so a zod issue path can be mapped back to the source position.
 */

/** Aliases expand to copies; a small document with many aliases can expand to gigabytes. */
const MAX_ALIAS_COUNT = 100;
export const DEFAULT_MAX_TEMPLATE_BYTES = 1024 * 1024;

export interface ParseTemplateOptions {
  maxBytes?: number;
  /** the name used in messages */
  fileName?: string;
}

export function parseTemplateYaml(text: string, options: ParseTemplateOptions = {}): TemplateSpec {
  scanTemplateYaml(text, options);
  return parseScannedTemplateYaml(text, options);
}

/**
 * The cheap first half of parseTemplateYaml: refuses a document over the size limit or past
 * the YAML bounds (yaml-bounds.ts), and returns its node count, which tells what the second
 * half will cost.
 */
export function scanTemplateYaml(text: string, options: ParseTemplateOptions = {}): number {
  const fileName = options.fileName ?? TEMPLATE_FILE;
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_TEMPLATE_BYTES;
  const size = Buffer.byteLength(text, 'utf8');
  if (size > maxBytes) {
    throw new AppError('PAYLOAD_TOO_LARGE', `${fileName} is ${size} bytes; the limit is ${maxBytes}. Make the template smaller (move large content into separate files).`);
  }
  return checkYamlShape(text, fileName);
}

/** The second half of parseTemplateYaml, for a document scanTemplateYaml let through. */
export function parseScannedTemplateYaml(text: string, options: ParseTemplateOptions = {}): TemplateSpec {
  const fileName = options.fileName ?? TEMPLATE_FILE;
  const lines = new LineCounter();
  const { doc, value } = loadYaml(text, lines, fileName, options.maxBytes ?? DEFAULT_MAX_TEMPLATE_BYTES);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    const problem = { field: '(template)', detail: 'The document must be a mapping with at least name and workspace (for example `name: my-template`).', line: 1, column: 1 };
    throw new AppError('TEMPLATE_INVALID', `${fileName} is invalid: ${problem.detail}`, { validations: [problem] });
  }
  const result = templateSchema.safeParse(value);
  if (!result.success) {
    const problems = describeIssues(result.error.issues, templateSchema, value);
    throw templateInvalid(fileName, problems.map((problem) => locate(problem, doc, lines)));
  }
  const expressionProblems = checkExpressions(result.data);
  if (expressionProblems.length > 0) {
    throw templateInvalid(fileName, expressionProblems.map((problem) => locate({ ...problem, atKey: false }, doc, lines)));
  }
  return result.data;
}

function loadYaml(text: string, lines: LineCounter, fileName: string, maxBytes: number): { doc: Document; value: unknown } {
  let doc: Document;
  let value: unknown;
  try {
    // Repeated keys are refused by checkYamlDocument, in linear time (yaml's own check is quadratic).
    doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false, schema: 'core', strict: true });
    const problem = doc.errors[0] ?? doc.warnings[0];
    if (problem) {
      const { line, col } = lines.linePos(problem.pos[0]);
      const message = /call stack/i.test(problem.message) ? 'the document nests too deeply' : problem.message.replace(/\s+/g, ' ').replace(/\.$/, '');
      const detail = `${message} at line ${line}, column ${col}`;
      throw new AppError('TEMPLATE_YAML_INVALID', `${fileName} is not valid YAML: ${detail}. Fix the syntax and push again.`, {
        validations: [{ field: '(yaml)', detail: `${detail}.`, line, column: col }],
      });
    }
    checkYamlDocument(doc, lines, fileName, maxBytes);
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (error) {
    if (error instanceof AppError) throw error;
    // The yaml package throws ReferenceError for alias bombs; deep nesting exhausts the stack.
    const reason = error instanceof RangeError
      ? 'it nests too deeply'
      : /alias/i.test((error as Error)?.message ?? '')
        ? `it uses aliases too often (the limit is ${MAX_ALIAS_COUNT} expansions); write the values out`
        : ((error as Error)?.message ?? 'it cannot be read');
    throw new AppError('TEMPLATE_YAML_INVALID', `${fileName} cannot be loaded: ${reason}. Simplify the document and push again.`, {
      validations: [{ field: '(yaml)', detail: `${reason}.` }],
      cause: error,
    });
  }
  return { doc, value };
}

function templateInvalid(fileName: string, validations: ValidationIssue[]): AppError {
  const first = validations[0];
  const where = first.line !== undefined ? ` (line ${first.line})` : '';
  const more = validations.length > 1 ? ` There ${validations.length === 2 ? 'is 1 more problem' : `are ${validations.length - 1} more problems`}; see validations.` : '';
  return new AppError('TEMPLATE_INVALID', `${fileName} is invalid: ${first.field}${where}: ${first.detail}${more}`, { validations });
}

function locate(problem: TemplateProblem, doc: Document, lines: LineCounter): ValidationIssue {
  const issue: ValidationIssue = { field: fieldPath(problem.path), detail: problem.detail };
  const offset = sourceOffset(doc, problem.path, problem.atKey);
  if (offset !== undefined) {
    const { line, col } = lines.linePos(offset);
    issue.line = line;
    issue.column = col;
  }
  return issue;
}

/**
 * The source offset of the node at `path`: the key when the problem is the key itself, else the
 * value. When the path runs past what the document has (a missing field), the deepest node that
 * exists, so "is required" points at the mapping that should contain it.
 */
function sourceOffset(doc: Document, path: PropertyKey[], atKey: boolean): number | undefined {
  let node: unknown = doc.contents;
  let offset = rangeStart(node);
  for (let i = 0; i < path.length; i++) {
    node = resolve(node, doc);
    const segment = path[i];
    let next: unknown;
    let keyNode: unknown;
    if (isMap(node)) {
      const pair = node.items.find((item) => isPair(item) && keyText(item.key) === String(segment));
      keyNode = pair?.key;
      next = pair?.value;
      if (pair && next === null) next = pair.key; // `field:` with no value
    } else if (isSeq(node) && typeof segment === 'number') {
      next = node.items[segment];
    }
    if (next === undefined) return offset;
    const last = i === path.length - 1;
    offset = (last && atKey ? rangeStart(keyNode) : undefined) ?? rangeStart(next) ?? offset;
    node = next;
  }
  return offset;
}

function resolve(node: unknown, doc: Document): unknown {
  return isAlias(node) ? node.resolve(doc) : node;
}

function keyText(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value);
  return typeof key === 'string' ? key : undefined;
}

function rangeStart(node: unknown): number | undefined {
  return isNode(node) && (node as Node).range ? (node as Node).range![0] : undefined;
}
