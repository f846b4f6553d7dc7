import type { z } from 'zod';

/**
 * Parses one JSON text frame with `schema`, for every websocket protocol of den (agent link,
 * terminal, exec). Never throws: it returns the frame, or a sentence that says what was wrong
 * and is safe to show, log or send back. Nothing of the peer's value is converted to a string
 * except a `type` that already is one: a `type` such as `{"toString":1}` throws when turned into
 * a string, and once did so inside a socket handler, stopping the whole server.
 */
export function parseJsonFrame<S extends z.ZodType>(
  text: string,
  maxChars: number,
  schema: S,
  what: string,
): { ok: true; value: z.infer<S> } | { ok: false; message: string } {
  // string length is a lower bound of the UTF-8 size; the websocket layer's maxPayload enforces bytes
  if (text.length > maxChars) return { ok: false, message: `A ${what} is larger than ${maxChars} bytes.` };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, message: `A ${what} is not valid JSON.` };
  }
  const parsed = schema.safeParse(value);
  if (parsed.success) return { ok: true, value: parsed.data };
  const issue = parsed.error.issues[0];
  const where = issue ? `${issue.path.map(String).join('.') || 'frame'}: ${issue.message}` : 'it does not match the schema';
  return { ok: false, message: `A '${frameType(value)}' ${what} is invalid: ${where}.` };
}

/** The frame's `type` for a message: the string itself (shortened), or what kind of value it is. */
function frameType(value: unknown): string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'unknown';
  const type = (value as { type?: unknown }).type;
  if (typeof type === 'string') return type.slice(0, 32).replace(/[^\x20-\x7e]/g, '?');
  return type === undefined ? 'untyped' : `(${type === null ? 'null' : Array.isArray(type) ? 'array' : typeof type})`;
}
