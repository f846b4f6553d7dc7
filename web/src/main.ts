import { openTerminal } from './terminal.ts';
import type { ConnectionState } from './connection.ts';

/** The page lives at /@<owner>/<workspace>/terminal?session=<id>. */
const TERMINAL_PATH = /^\/@([^/]+)\/([^/]+)\/terminal\/?$/;

const container = document.getElementById('terminal')!;
const banner = document.getElementById('banner')!;
const match = TERMINAL_PATH.exec(location.pathname);

if (!match) {
  showBanner('Open a terminal at /@<owner>/<workspace>/terminal.', true);
} else {
  const [, owner, workspace] = match.map(decodeURIComponent);
  const wsScheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${wsScheme}//${location.host}/api/v1/workspaces/${encodeURIComponent(owner)}/${encodeURIComponent(workspace)}/terminal`;
  const params = new URLSearchParams(location.search);
  document.title = `${owner}/${workspace} — den terminal`;
  const opened = openTerminal({
    container,
    url,
    sessionId: params.get('session') ?? undefined,
    onSessionId(sessionId) {
      // replaceState: a reload reattaches to this shell; Back does not walk through session ids
      const next = new URL(location.href);
      next.searchParams.set('session', sessionId);
      if (next.href !== location.href) history.replaceState(null, '', next);
    },
    onState: renderState,
  });
  // for the browser tests (Playwright reads the screen from the buffer; WebGL draws no DOM text) and the devtools console
  (globalThis as { denTerminal?: unknown }).denTerminal = opened;
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
    case 'ended':
      return showBanner(`The shell exited${state.code ? ` with status ${state.code}` : ''}. Reload to start a new one.`, true);
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
