import './zod-config.ts';
import { openTerminal } from './terminal.ts';
import type { ConnectionState } from './connection.ts';
import { errorMessage, isSignedIn, signIn } from './signin.ts';
import { allowedOrigins } from '../../protocol/origins.ts';

/** The page lives at /@<owner>/<workspace>/terminal?session=<id>. */
const TERMINAL_PATH = /^\/@([^/]+)\/([^/]+)\/terminal\/?$/;

const container = document.getElementById('terminal')!;
const banner = document.getElementById('banner')!;
const match = TERMINAL_PATH.exec(location.pathname);

if (!match) {
  showBanner('Open a terminal at /@<owner>/<workspace>/terminal.', true);
} else {
  const [, owner, workspace] = match.map(decodeURIComponent);
  void start(owner, workspace).catch((error: Error) => showBanner(error.message, true));
}

async function start(owner: string, workspace: string): Promise<void> {
  document.title = `${owner}/${workspace} — den terminal`;
  if (wrongOrigin()) return;
  if (!(await isSignedIn())) await signIn();
  const api = `/api/v1/workspaces/${encodeURIComponent(owner)}/${encodeURIComponent(workspace)}`;
  const service = new URLSearchParams(location.search).get('service') ?? undefined;
  const opened = openTerminal({
    container,
    owner,
    workspace,
    service,
    sessionId: new URLSearchParams(location.search).get('session') ?? undefined,
    onSessionId(sessionId) {
      // replaceState: a reload reattaches to this shell; Back does not walk through session ids
      const next = new URL(location.href);
      next.searchParams.set('session', sessionId);
      if (next.href !== location.href) history.replaceState(null, '', next);
    },
    onState: renderState,
    whenRefused: () => whyRefused(`${api}/terminals${service ? `?service=${encodeURIComponent(service)}` : ''}`, `${owner}/${workspace}`),
  });
  // for the browser tests (Playwright reads the screen from the buffer; WebGL draws no DOM text) and the devtools console
  (globalThis as { denTerminal?: unknown }).denTerminal = opened;
}

/**
 * The server refused the websocket with an HTTP error the browser cannot read; the sessions
 * route (`sessions`, the same checks) says which: signed out (sign in, then retry at once), no
 * such workspace or service agent (stop), or something passing (the server restarting: back off
 * and retry).
 */
async function whyRefused(sessions: string, label: string): Promise<'retry' | 'backoff' | { failed: string }> {
  const response = await fetch(sessions, { credentials: 'same-origin' });
  if (response.status === 401) {
    showBanner('Your session ended. Sign in to reconnect; the shell keeps running.');
    await signIn();
    return 'retry';
  }
  if (response.status === 404 || response.status === 403) return { failed: `${await errorMessage(response)} (${label})` };
  return 'backoff';
}

/**
 * The server accepts the terminal socket (with the session cookie) only from its access URL's
 * origin; opened under another name the page says where to go instead of retrying forever.
 */
function wrongOrigin(): boolean {
  const accessUrl = document.querySelector<HTMLMetaElement>('meta[name="den-access-url"]')?.content;
  if (!accessUrl || allowedOrigins(accessUrl).includes(location.origin)) return false;
  const target = new URL(location.pathname + location.search, accessUrl).href;
  showBanner(`This den server is reached at ${new URL(accessUrl).origin}; its terminal does not connect from ${location.origin}. Open `, true);
  const link = document.createElement('a');
  link.href = target;
  link.textContent = target;
  link.style.color = '#8ab4f8';
  banner.append(link, ' instead, or set the server\'s access URL (DEN_ACCESS_URL).');
  return true;
}

function renderState(state: ConnectionState): void {
  switch (state.kind) {
    case 'attached':
      return hideBanner();
    case 'connecting':
      // the first connect is quick; only say something when it is a retry
      if (state.attempt > 0) showBanner('Reconnecting…');
      return;
    case 'reconnecting':
      return showBanner(`Connection lost — reconnecting${state.inMs > 1000 ? ` in ${Math.round(state.inMs / 1000)} s` : ''}… Your shell keeps running.`);
    case 'ended': {
      // the session is gone: a reload starts a new shell instead of asking for this one
      const next = new URL(location.href);
      next.searchParams.delete('session');
      history.replaceState(null, '', next);
      return showBanner(`The shell exited${state.code ? ` with status ${state.code}` : ''}. Reload to start a new one.`, true);
    }
    case 'failed':
      return showBanner(state.message, true);
  }
}

function showBanner(text: string, fatal = false): void {
  banner.textContent = text;
  banner.classList.toggle('fatal', fatal);
  banner.hidden = false;
}

function hideBanner(): void {
  banner.hidden = true;
}
