import { DenClient } from '../../../client/client.ts';
import type { MeDto } from '../../../protocol/users.ts';

/**
 * The dashboard's API client: the typed client of client/ on this origin with the session cookie.
 * Writes need the session's CSRF token (X-CSRF-Token), which GET /users/me returns; signIn and
 * the session query set it, so every component uses `den()` rather than a client of its own.
 */
let client = new DenClient({ url: location.origin, credentials: 'same-origin' });

export function den(): DenClient {
  return client;
}

/** After sign-in or a session check: later writes carry this session's CSRF token. */
export function setCsrfToken(csrfToken: string | undefined): void {
  client = new DenClient({ url: location.origin, credentials: 'same-origin', headers: csrfToken ? { 'x-csrf-token': csrfToken } : {} });
}

export type Me = MeDto;

/** The signed-in user, or null when the browser has no session (401). */
export async function fetchSession(): Promise<Me | null> {
  try {
    const me = await den().me();
    setCsrfToken(me.csrfToken);
    return me;
  } catch (error) {
    if ((error as { status?: number }).status === 401) return null;
    throw error;
  }
}

/** The sentence to show for a failed request: the server's, or one about the connection. */
export function errorText(error: unknown): string {
  if (!error) return '';
  const message = (error as Error).message;
  return message || 'Something went wrong. Try again.';
}

/** The field errors of a refused request (template validation, form fields), with their lines. */
export function validationsOf(error: unknown): { field: string; detail: string; line?: number }[] {
  return ((error as { validations?: { field: string; detail: string; line?: number }[] })?.validations) ?? [];
}
