import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { WebglAddon } from '@xterm/addon-webgl';
import { WebLinksAddon } from '@xterm/addon-web-links';
import { SearchAddon } from '@xterm/addon-search';
import { Unicode11Addon } from '@xterm/addon-unicode11';
import '@xterm/xterm/css/xterm.css';
import { TerminalConnection, type ConnectionState, type TerminalConnectionOptions } from './connection.ts';

export interface OpenTerminalOptions {
  container: HTMLElement;
  owner: string;
  workspace: string;
  /** a shell in the agent beside this environment service instead of the workspace's own */
  service?: string;
  sessionId?: string;
  /** the session id changed (new session, or the old one was gone): keep it in the URL */
  onSessionId(sessionId: string): void;
  onState(state: ConnectionState): void;
  /** see TerminalConnectionOptions.whenRefused */
  whenRefused?: TerminalConnectionOptions['whenRefused'];
}

type XTerm = Terminal;
type Search = SearchAddon;

export interface OpenedTerminal {
  terminal: XTerm;
  connection: TerminalConnection;
  search: Search;
  dispose(): void;
}

/**
 * xterm.js 6 wired to a den terminal session: fit to the container, WebGL rendering with the
 * DOM renderer as fallback (xterm 6 has no canvas renderer), clickable links, search, Unicode 11
 * widths (the agent's headless mirror must use the same, or wide characters shift on reattach),
 * copy/paste on Ctrl+Shift+C/V, and output acknowledged from write callbacks.
 */
export function openTerminal(options: OpenTerminalOptions): OpenedTerminal {
  const terminal: XTerm = new Terminal({
    allowProposedApi: true, // unicode11 sets term.unicode.activeVersion, a proposed API
    cursorBlink: true,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    fontSize: 14,
    scrollback: 10_000,
    theme: { background: '#1e1e1e' },
  });
  const fit = new FitAddon();
  const search: Search = new SearchAddon();
  terminal.loadAddon(fit);
  terminal.loadAddon(search);
  terminal.loadAddon(new WebLinksAddon());
  terminal.loadAddon(new Unicode11Addon());
  terminal.unicode.activeVersion = '11';
  terminal.open(options.container);
  loadWebgl(terminal);
  fit.fit();

  const connection = new TerminalConnection({
    owner: options.owner,
    workspace: options.workspace,
    service: options.service,
    sessionId: options.sessionId,
    size: () => ({ cols: terminal.cols, rows: terminal.rows }),
    onAttached: (info) => {
      // the snapshot is the whole screen: start from a clean terminal so nothing is doubled
      terminal.reset();
      terminal.write(info.snapshot);
      if (info.title) document.title = info.title;
      if (info.cols !== terminal.cols || info.rows !== terminal.rows) connection.resize(terminal.cols, terminal.rows);
      options.onSessionId(info.sessionId);
    },
    onOutput: (data, consumed) => terminal.write(data, consumed),
    onState: options.onState,
    whenRefused: options.whenRefused,
  });

  const disposables = [
    terminal.onData((data: string) => connection.input(data)),
    // onBinary carries raw bytes as a latin1 string (some mouse reports); send them as bytes
    terminal.onBinary((data: string) => connection.input(Uint8Array.from(data, (c: string) => c.charCodeAt(0) & 0xff))),
    terminal.onResize(({ cols, rows }: { cols: number; rows: number }) => connection.resize(cols, rows)),
    terminal.onTitleChange((title: string) => (document.title = title)),
  ];
  terminal.attachCustomKeyEventHandler((event: KeyboardEvent) => clipboardKeys(terminal, search, event));

  let frame = 0;
  const observer = new ResizeObserver(() => {
    cancelAnimationFrame(frame);
    frame = requestAnimationFrame(() => fit.fit());
  });
  observer.observe(options.container);
  terminal.focus();

  return {
    terminal,
    connection,
    search,
    dispose() {
      observer.disconnect();
      for (const disposable of disposables) disposable.dispose();
      connection.dispose();
      terminal.dispose();
    },
  };
}

function loadWebgl(terminal: XTerm): void {
  try {
    const webgl = new WebglAddon();
    // a lost GPU context (driver reset, too many contexts) falls back to the DOM renderer
    webgl.onContextLoss(() => webgl.dispose());
    terminal.loadAddon(webgl);
  } catch (error) {
    console.info('den terminal: WebGL unavailable, using the DOM renderer', error);
  }
}

/** Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes, Ctrl+Shift+F searches; everything else goes to the shell. */
function clipboardKeys(terminal: XTerm, search: Search, event: KeyboardEvent): boolean {
  if (event.type !== 'keydown' || !event.ctrlKey || !event.shiftKey) return true;
  switch (event.key.toLowerCase()) {
    case 'c':
      if (terminal.hasSelection()) void navigator.clipboard.writeText(terminal.getSelection());
      return false;
    case 'v':
      void navigator.clipboard.readText().then((text: string) => terminal.paste(text));
      return false;
    case 'f': {
      const term = prompt('Search the terminal for:');
      if (term) search.findNext(term);
      return false;
    }
    default:
      return true;
  }
}
