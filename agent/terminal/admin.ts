import { DEFAULT_CHANNEL_WINDOW, type ChannelSpec } from '../../protocol/agent.ts';
import { ChannelSender } from '../../protocol/agent-flow.ts';
import type { TerminalSessionList } from '../../protocol/terminal.ts';
import type { ChannelContext, ChannelHandler } from '../exec.ts';
import type { TerminalSessions } from './registry.ts';
import type { TerminalSessionInfo } from './session.ts';

type TerminalAdminOpen = Extract<ChannelSpec, { kind: 'terminal-admin' }>;

const NOTHING: ChannelHandler = { onData() {}, onEof() {}, onWindow() {}, onSignal() {}, onResize() {}, abort() {} };

/**
 * The agent side of a `terminal-admin` channel: one request in the open spec, one answer. A
 * list answers `open_ok`, the session list as one JSON document (split into DATA frames under
 * the server's credit), then `close`; a close of an unknown session answers `open_error
 * TERMINAL_SESSION_NOT_FOUND`, of a known one `open_ok` and, once the hung-up shell has exited, `close`.
 * A channel rather than a new control frame: it reuses the link's open/answer/timeout machinery
 * and credit, and an older agent refuses it cleanly with CHANNEL_KIND_UNSUPPORTED.
 */
export function terminalAdminOpener(sessions: TerminalSessions) {
  return (channel: number, spec: TerminalAdminOpen, peerWindow: number, context: ChannelContext, onClosed: () => void): ChannelHandler => {
    if (spec.op === 'close' && !sessions.close(spec.sessionId)) {
      context.send({ type: 'open_error', channel, code: 'TERMINAL_SESSION_NOT_FOUND', message: `Terminal session '${spec.sessionId}' has ended or never existed.` });
      onClosed();
      return NOTHING;
    }
    context.send({ type: 'open_ok', channel, window: DEFAULT_CHANNEL_WINDOW });
    let finished = false;
    const sender = new ChannelSender(channel, peerWindow, (frame) => context.send(frame));
    const finish = () => {
      if (finished) return;
      finished = true;
      sender.close();
      onClosed();
    };
    const done = () => {
      if (finished) return;
      context.send({ type: 'close', channel });
      finish();
    };
    if (spec.op === 'list') {
      const list: TerminalSessionList = { sessions: sessions.list().map(summary) };
      sender.write('data', new TextEncoder().encode(JSON.stringify(list)), done);
    } else {
      // answered once the shell is gone (SIGKILL follows SIGHUP after a grace period), so a list
      // right after `den terminal close` no longer shows it
      const session = sessions.get(spec.sessionId);
      if (!session || session.exited) done();
      else session.onExit(done);
    }
    return { ...NOTHING, onWindow: (bytes) => sender.grant(bytes), abort: finish };
  };
}

function summary(info: TerminalSessionInfo): TerminalSessionList['sessions'][number] {
  return {
    id: info.id,
    cols: info.cols,
    rows: info.rows,
    clients: info.clients,
    createdAt: new Date(info.createdAt).toISOString(),
    idleSince: info.orphanedAt === undefined ? null : new Date(info.orphanedAt).toISOString(),
    ...(info.title ? { title: info.title } : {}),
    command: info.command,
  };
}
