import { DEFAULT_CHANNEL_WINDOW } from '../../protocol/agent.ts';
import { ReceiveWindow } from '../../protocol/agent-flow.ts';
import { AppError } from '../../protocol/errors.ts';
import { terminalSessionListSchema, type TerminalSessionList } from '../../protocol/terminal.ts';
import type { AgentHub, AgentTarget } from '../agents/hub-types.ts';

/** The agent answers a terminal-admin request within this time, or the caller gets an error. */
const ANSWER_TIMEOUT_MS = 10_000;
/** A session list is a few hundred bytes per session (200 sessions at most, titles <= 4 KiB). */
const MAX_ANSWER_BYTES = 2 * 1024 * 1024;

/** Lists the terminal sessions of an agent (`terminal-admin` channel, op list). */
export async function listTerminalSessions(hub: AgentHub, agent: AgentTarget): Promise<TerminalSessionList> {
  const body = await request(hub, agent, { kind: 'terminal-admin', op: 'list' });
  let parsed;
  try {
    parsed = terminalSessionListSchema.safeParse(JSON.parse(body));
  } catch {
    parsed = undefined;
  }
  if (!parsed?.success) throw new AppError('AGENT_PROTOCOL_ERROR', 'The workspace agent answered the session list with something unreadable; restart the workspace to update its agent.');
  return parsed.data;
}

/** Hangs up one terminal session; AppError TERMINAL_SESSION_NOT_FOUND when the agent has no such session. */
export async function closeTerminalSession(hub: AgentHub, agent: AgentTarget, sessionId: string): Promise<void> {
  await request(hub, agent, { kind: 'terminal-admin', op: 'close', sessionId });
}

/** Opens a terminal-admin channel and resolves with the DATA it carried once the agent closes it. */
async function request(hub: AgentHub, agent: AgentTarget, spec: { kind: 'terminal-admin'; op: 'list' } | { kind: 'terminal-admin'; op: 'close'; sessionId: string }): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  let settle!: { resolve: (body: string) => void; reject: (error: Error) => void };
  const answered = new Promise<string>((resolve, reject) => (settle = { resolve, reject }));
  const window = new ReceiveWindow(DEFAULT_CHANNEL_WINDOW);
  let release: (() => void) | undefined;
  await hub.openChannel(agent, spec, DEFAULT_CHANNEL_WINDOW, (channel, _peerWindow, link) => {
    release = () => {
      link.send({ type: 'close', channel });
      link.release();
    };
    return {
      onData(type, payload) {
        if (type !== 'data' || !window.receive(payload.byteLength) || size + payload.byteLength > MAX_ANSWER_BYTES) {
          release?.();
          return settle.reject(new AppError('AGENT_PROTOCOL_ERROR', 'The workspace agent sent more than a terminal-admin answer may hold; restart the workspace if it keeps happening.'));
        }
        chunks.push(payload.slice());
        size += payload.byteLength;
        // collected in memory (bounded above), so grant at once
        const granted = window.consume(payload.byteLength, true);
        if (granted > 0) link.send({ type: 'window', channel, bytes: granted });
      },
      onWindow() {},
      onEof() {},
      onClose(frame) {
        if (frame.error) return settle.reject(new AppError('AGENT_NOT_CONNECTED', `The workspace agent could not answer: ${frame.error.message}`));
        settle.resolve(Buffer.concat(chunks).toString('utf8'));
      },
      onLinkLost() {
        settle.reject(new AppError('AGENT_NOT_CONNECTED', 'The workspace agent disconnected before it answered. Try again in a few seconds.'));
      },
    };
  });
  const timer = setTimeout(() => {
    release?.();
    settle.reject(new AppError('AGENT_NOT_CONNECTED', 'The workspace agent did not answer in time. Try again; if it keeps happening, restart the workspace.'));
  }, ANSWER_TIMEOUT_MS);
  try {
    return await answered;
  } finally {
    clearTimeout(timer);
  }
}
