/**
 * The page's session: den's cookie session, as set by POST /api/v1/auth/login. The login route is
 * public, so it needs no CSRF token; the cookie is HttpOnly and SameSite=Lax, and the terminal
 * websocket additionally checks the Origin of cookie-authenticated upgrades.
 */

/** What GET /api/v1/users/me says about this browser's session. */
export async function isSignedIn(): Promise<boolean> {
  const response = await fetch('/api/v1/users/me', { credentials: 'same-origin' });
  if (response.status === 401) return false;
  if (!response.ok) throw new Error(await errorMessage(response));
  return true;
}

/** Shows the sign-in form until a sign-in succeeds. */
export function signIn(): Promise<void> {
  const form = document.getElementById('login') as HTMLFormElement;
  const error = document.getElementById('login-error')!;
  form.hidden = false;
  (form.elements.namedItem('username') as HTMLInputElement).focus();
  return new Promise((resolve) => {
    form.onsubmit = async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      error.textContent = '';
      const button = form.querySelector('button')!;
      button.disabled = true;
      try {
        const response = await fetch('/api/v1/auth/login', {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ username: data.get('username'), password: data.get('password') }),
        });
        if (!response.ok) {
          error.textContent = await errorMessage(response);
          return;
        }
        form.hidden = true;
        form.reset();
        form.onsubmit = null;
        resolve();
      } catch {
        error.textContent = 'The den server did not answer. Check your connection and try again.';
      } finally {
        button.disabled = false;
      }
    };
  });
}

/** The sentence of den's error envelope, or the HTTP status when there is none. */
export async function errorMessage(response: Response): Promise<string> {
  try {
    const body = (await response.json()) as { error?: { message?: string } };
    if (body.error?.message) return body.error.message;
  } catch {
    // not JSON: fall through to the status
  }
  return `The den server answered ${response.status} ${response.statusText}.`;
}
