import { finished } from 'node:stream/promises';
import { LineSplitter, MAX_SYNC_LINE_BYTES } from '../../protocol/sync.ts';
import type { ChannelSpec } from '../../protocol/agent.ts';
import { createExecSession } from '../agents/exec-session.ts';
import type { AgentHub, AgentRef, ExecSession } from '../agents/hub-types.ts';

/** The server's receive window for the op stream: large enough for a bulk copy at disk speed, one per running sync. */
const STREAM_WINDOW = 2 * 1024 * 1024;

/** Opens a channel of the sync kinds as a byte session (the exec session's shape: stdio = DATA both ways, stderr). */
export async function openSession(agents: AgentHub, agent: AgentRef, spec: ChannelSpec): Promise<ExecSession> {
  let session: ExecSession | undefined;
  await agents.openChannel(agent, spec, STREAM_WINDOW, (channel, peerWindow, link) => {
    const created = createExecSession(channel, peerWindow, (frame) => link.send(frame), () => link.release(), STREAM_WINDOW);
    session = created.session;
    return created.endpoint;
  });
  return session!;
}

/** Opens a sync's target, then its source (the source's first batch needs somewhere to go); neither stays open when the other fails. */
export async function openPair(agents: AgentHub, target: { at: AgentRef; spec: ChannelSpec }, source: { at: AgentRef; spec: ChannelSpec }): Promise<{ source: ExecSession; target: ExecSession }> {
  const targetSession = await openSession(agents, target.at, target.spec);
  try {
    return { source: await openSession(agents, source.at, source.spec), target: targetSession };
  } catch (error) {
    targetSession.stdio.destroy();
    throw error;
  }
}

/**
 * Pipes a source's op stream into a target (backpressure through the pipe and both channels'
 * credit) and hands each side's status lines over; a line that throws (malformed, too long) is
 * passed to `fail`.
 */
export function joinSessions(source: ExecSession, target: ExecSession, lines: { source(line: string): void; target(line: string): void }, fail: (error: unknown) => void): void {
  source.stdio.pipe(target.stdio);
  const guard = (work: () => void) => {
    try {
      work();
    } catch (error) {
      fail(error);
    }
  };
  const sourceLines = new LineSplitter(MAX_SYNC_LINE_BYTES, lines.source);
  const targetLines = new LineSplitter(MAX_SYNC_LINE_BYTES, lines.target);
  source.stderr.on('data', (chunk: Buffer) => guard(() => sourceLines.push(chunk)));
  target.stdio.on('data', (chunk: Buffer) => guard(() => targetLines.push(chunk)));
}

/** Ends both channels of a joined pair. */
export function closeSessions(source: ExecSession | undefined, target: ExecSession | undefined): void {
  source?.stdio.unpipe();
  source?.stdio.destroy();
  target?.stdio.destroy();
}

/**
 * Calls `then` once the session has ended and the last of `readable` (its status lines) was read:
 * an agent that stopped the sync said why first. Only the reading side is awaited: a target's
 * writing side, fed by the source, never ends when its link is lost.
 */
export function afterEnd(session: ExecSession, readable: NodeJS.ReadableStream, then: () => void): void {
  void session.exit.catch(() => undefined).then(() => finished(readable, { writable: false }).catch(() => undefined)).then(then);
}

export function parseJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}
