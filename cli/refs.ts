import { UsageError } from './errors.ts';

/**
 * Parsing what people type for a workspace or a server. Kept apart from ./context.ts (which
 * loads the HTTP client and its schemas) so `den exec` can resolve a workspace without them.
 */
export interface WorkspaceRef {
  owner: string;
  name: string;
}

/** Splits `owner/name` or `name`; anything else is a usage error naming the accepted forms. */
export function parseWorkspaceRef(reference: string): { owner?: string; name: string } {
  const parts = reference.split('/');
  if (parts.length === 1 && parts[0]) return { name: parts[0] };
  if (parts.length === 2 && parts[0] && parts[1]) return { owner: parts[0], name: parts[1] };
  throw new UsageError(`'${reference}' is not a workspace reference. Use NAME for your own workspace or OWNER/NAME.`);
}

/** Normalises a server URL typed by a person: adds http:// for loopback hosts, https:// otherwise; drops a trailing slash. */
export function normaliseServerUrl(input: string): string {
  let text = input.trim();
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    const loopback = /^(localhost|127\.|\[::1\])/.test(text);
    text = `${loopback ? 'http' : 'https'}://${text}`;
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError(`'${input}' is not a URL. Give the server's address, for example http://127.0.0.1:7080.`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`'${input}' is not an http(s) URL. Give the server's address, for example https://den.example.com.`);
  }
  return url.toString().replace(/\/+$/, '');
}
