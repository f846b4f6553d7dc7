import { useEffect, useRef, useState } from 'react';
import { openTerminal, type OpenedTerminal } from '../terminal.ts';
import type { ConnectionState } from '../connection.ts';
import { den, errorText } from './api.ts';

/**
 * One terminal tab: the terminal page's component (xterm.js + the reconnecting connection) in a
 * div. Loaded on demand: xterm.js is most of the dashboard's JavaScript. Tabs stay mounted while
 * hidden, so switching keeps each shell's screen and connection.
 */
export default function TerminalTab({ owner, name, service, sessionId, onSessionId, visible }: {
  owner: string;
  name: string;
  /** a shell in the agent beside this environment service */
  service?: string;
  sessionId?: string;
  onSessionId(id: string): void;
  visible: boolean;
}) {
  const container = useRef<HTMLDivElement>(null);
  const opened = useRef<OpenedTerminal>(undefined);
  const [state, setState] = useState<ConnectionState>({ kind: 'connecting', attempt: 0 });
  const idCallback = useRef(onSessionId);
  idCallback.current = onSessionId;
  useEffect(() => {
    const terminal = openTerminal({
      container: container.current!,
      owner,
      workspace: name,
      service,
      sessionId,
      onSessionId: (id) => idCallback.current(id),
      onState: setState,
      // the browser cannot read why the upgrade was refused: the sessions route answers the same checks in words
      whenRefused: async () => {
        try {
          await den().workspaces.terminals(owner, name, service);
          return 'backoff';
        } catch (error) {
          const status = (error as { status?: number }).status;
          return status === 401 || status === 403 || status === 404 ? { failed: errorText(error) } : 'backoff';
        }
      },
    });
    opened.current = terminal;
    // for the browser tests, as on the terminal page (WebGL draws no DOM text)
    (globalThis as { denTerminal?: unknown }).denTerminal = terminal;
    return () => terminal.dispose();
    // a tab is one session for its whole life
  }, [owner, name, service]);
  useEffect(() => {
    if (visible) {
      opened.current?.terminal.focus();
      (globalThis as { denTerminal?: unknown }).denTerminal = opened.current;
    }
  }, [visible]);
  return (
    <div className="terminal-tab" hidden={!visible}>
      <p className="terminal-state" role="status">{describe(state)}</p>
      <div ref={container} className="terminal-screen" aria-label="Terminal" />
    </div>
  );
}

function describe(state: ConnectionState): string {
  switch (state.kind) {
    case 'attached': return '';
    case 'connecting': return state.attempt > 0 ? 'Reconnecting…' : 'Connecting…';
    case 'reconnecting': return `Connection lost — reconnecting${state.inMs > 1000 ? ` in ${Math.round(state.inMs / 1000)} s` : ''}… The shell keeps running.`;
    case 'ended': return `The shell exited${state.code ? ` with status ${state.code}` : ''}. Close this tab or open a new one.`;
    case 'failed': return state.message;
  }
}
