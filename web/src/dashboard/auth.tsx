import { useState, type FormEvent } from 'react';
import { useQueryClient } from '@tanstack/react-query';
import { den, setCsrfToken } from './api.ts';
import { RequestError, usePageTitle } from './ui.tsx';

/** First-user setup: shown while the server has no users; creates the owner and signs in. */
export function Setup() {
  usePageTitle('Set up den');
  const queries = useQueryClient();
  const [mismatch, setMismatch] = useState(false);
  const { busy, error, run } = useSignIn();
  const submit = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const data = new FormData(event.currentTarget);
    if (data.get('password') !== data.get('confirm')) return setMismatch(true);
    setMismatch(false);
    void run(async () => {
      const result = await den().createFirstUser({
        username: String(data.get('username')),
        password: String(data.get('password')),
        displayName: String(data.get('displayName') || '') || undefined,
      });
      history.replaceState(null, '', '/workspaces');
      queries.setQueryData(['setup'], { setupRequired: false });
      return result;
    });
  };
  return (
    <main className="narrow" id="main">
      <form className="card" onSubmit={submit} aria-labelledby="setup-title">
        <h1 id="setup-title">Welcome to den</h1>
        <p>This server has no users yet. Create the first account: it is the owner, who adds everyone else.</p>
        <label>Username <input name="username" autoComplete="username" autoCapitalize="none" spellCheck={false} required pattern="[a-z0-9]([a-z0-9\-]*[a-z0-9])?" title="lowercase letters, digits and inner dashes, for example alice" maxLength={32} /></label>
        <label>Display name (optional) <input name="displayName" maxLength={128} /></label>
        <label>Password <input name="password" type="password" autoComplete="new-password" required minLength={8} /></label>
        <label>Repeat the password <input name="confirm" type="password" autoComplete="new-password" required minLength={8} aria-invalid={mismatch} aria-describedby={mismatch ? 'mismatch' : undefined} /></label>
        {mismatch && <p id="mismatch" className="error" role="alert">The two passwords differ. Type the same password twice.</p>}
        <button type="submit" disabled={busy}>Create the owner account</button>
        <RequestError error={error} />
      </form>
    </main>
  );
}

export function SignIn() {
  usePageTitle('Sign in');
  const { busy, error, run } = useSignIn();
  const submit = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    const data = new FormData(event.currentTarget);
    // `next` goes to den, which answers with it only when it leads back to one of its apps
    const next = new URLSearchParams(location.search).get('next') ?? undefined;
    void run(() => den().login({ username: String(data.get('username')), password: String(data.get('password')), next }));
  };
  return (
    <main className="narrow" id="main">
      <form className="card" onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">Sign in to den</h1>
        <label>Username <input name="username" autoComplete="username" autoCapitalize="none" spellCheck={false} required /></label>
        <label>Password <input name="password" type="password" autoComplete="current-password" required /></label>
        <button type="submit" disabled={busy}>Sign in</button>
        <RequestError error={error} />
      </form>
    </main>
  );
}

/**
 * Runs a request that signs in (setup or login): on success the browser leaves for the app den
 * sent back (`next`, checked by den), or else the session's CSRF token is used for later writes
 * and the session is fetched again, which shows the dashboard; on failure the
 * server's sentence is kept for the form, and what was typed stays in it.
 */
function useSignIn() {
  const queries = useQueryClient();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const run = async (request: () => Promise<{ csrfToken?: string; next?: string }>) => {
    setBusy(true);
    setError(undefined);
    try {
      const result = await request();
      if (result.next) return location.replace(result.next);
      setCsrfToken(result.csrfToken);
      await queries.invalidateQueries({ queryKey: ['session'] });
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run };
}
