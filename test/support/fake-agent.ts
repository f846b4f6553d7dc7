import WebSocket from 'ws';
import { AGENT_PROTOCOL, decodeFrame, encodeFrame, type AgentFrame } from '../../protocol/agent.ts';
import { waitFor } from './sockets.ts';

/** The server answers hello with welcome well within this on a loaded machine. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
/** How long `next` waits for a frame by default. */
export const FRAME_TIMEOUT_MS = 10_000;
/** Frames kept for `next`; older ones are dropped. */
const MAX_KEPT_FRAMES = 2_000;

/**
 * A scripted agent over a real websocket, for tests of what den does with frames a (possibly
 * hostile) agent sends: it speaks the handshake, then sends whatever the test gives it, valid
 * frames or raw bytes, and records every frame the server sends.
 */
export interface FakeAgent {
  socket: WebSocket;
  /** frames from the server, in order (the welcome included) */
  frames: AgentFrame[];
  send(frame: AgentFrame | string | Uint8Array): void;
  /** the first frame after `from` (an index into `frames`) that satisfies `match` */
  next<T extends AgentFrame>(match: (frame: AgentFrame) => frame is T, options?: { from?: number; timeoutMs?: number }): Promise<T>;
  next(match: (frame: AgentFrame) => boolean, options?: { from?: number; timeoutMs?: number }): Promise<AgentFrame>;
  /** resolves with the close code once the server closed the link */
  closed: Promise<number>;
  /** called for every frame from the server as it arrives (an autopilot that answers opens) */
  onFrame?: (frame: AgentFrame) => void;
  /** resolves once the server has handled everything sent before (a ping answered in order) */
  barrier(timeoutMs?: number): Promise<void>;
  close(): void;
}

export function helloFrame(instance = 'fake'): AgentFrame {
  return { type: 'hello', protocol: AGENT_PROTOCOL, agentVersion: 'fake', instance, os: { platform: 'linux', arch: 'x64', release: '1', hostname: 'fake' }, state: 'ready', startupBegun: true };
}

/** Connects with the agent token, says hello and resolves once the server welcomed it. */
export async function connectFakeAgent(baseUrl: string, token: string): Promise<FakeAgent> {
  const socket = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/api/v1/agent/connect`, { headers: { authorization: `Bearer ${token}` } });
  const frames: AgentFrame[] = [];
  const waiters = new Set<() => void>();
  socket.on('message', (data: Buffer, isBinary: boolean) => {
    let frame: AgentFrame;
    try {
      frame = decodeFrame(isBinary ? new Uint8Array(data) : data.toString('utf8'));
    } catch {
      return; // the tests assert on what they expect; a frame this decoder refuses is not one of those
    }
    // a long fuzz run must not keep every frame: the tests look at recent ones
    if (frames.length > MAX_KEPT_FRAMES) frames.splice(0, frames.length - MAX_KEPT_FRAMES / 2);
    frames.push(frame);
    agent.onFrame?.(frame);
    for (const wake of [...waiters]) wake();
  });
  socket.on('error', () => {});
  const closed = new Promise<number>((resolve) => socket.once('close', (code) => {
    resolve(code);
    for (const wake of [...waiters]) wake();
  }));
  const agent: FakeAgent = {
    socket,
    frames,
    closed,
    send(frame) {
      if (socket.readyState !== WebSocket.OPEN) return;
      socket.send(typeof frame === 'string' || frame instanceof Uint8Array ? frame : encodeFrame(frame));
    },
    next(match: (frame: AgentFrame) => boolean, options: { from?: number; timeoutMs?: number } = {}) {
      const timeoutMs = options.timeoutMs ?? FRAME_TIMEOUT_MS;
      return waitFor(waiters, () => frames.slice(options.from ?? 0).find(match), {
        timeoutMs,
        gone: () => socket.readyState === WebSocket.CLOSED,
        failure: (why) => new Error(`${why === 'gone' ? 'The link closed before the frame came' : `No matching frame within ${timeoutMs} ms`}; frames: ${describe(frames)}`),
      });
    },
    async barrier(timeoutMs = FRAME_TIMEOUT_MS) {
      const id = ++pings;
      agent.send({ type: 'ping', id });
      await agent.next((frame) => frame.type === 'pong' && frame.id === id, { timeoutMs });
    },
    close() {
      socket.terminate();
    },
  };
  let pings = 1_000_000;
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => {
      agent.send(helloFrame());
      resolve();
    });
    socket.once('unexpected-response', (_request, response) => reject(new Error(`The agent endpoint answered ${response.statusCode}.`)));
  });
  await agent.next((frame) => frame.type === 'welcome', { timeoutMs: HANDSHAKE_TIMEOUT_MS });
  return agent;
}

function describe(frames: AgentFrame[]): string {
  return JSON.stringify(frames.map((frame) => frame.type));
}
