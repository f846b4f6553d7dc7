import type { Duplex } from 'node:stream';
import { MAIN_AGENT, type AgentFrame, type ChannelSpec, type ControlFrameOf } from '../../protocol/agent.ts';


/**
 * One agent: a workspace runs its main agent and one beside each environment service that asks
 * for it (named after the service). Each has its own token, state and connection.
 */
export interface AgentRef {
  workspaceId: string;
  /** MAIN_AGENT, or the environment service the agent runs beside */
  agent: string;
}

/** Which agent a hub method addresses: an AgentRef, or a workspace id alone for its main agent. */
export type AgentTarget = string | AgentRef;

export function agentRef(target: AgentTarget): AgentRef {
  return typeof target === 'string' ? { workspaceId: target, agent: MAIN_AGENT } : target;
}

/** A map key for one agent ('/' cannot occur in a workspace id or a service name). */
export function agentKey(target: AgentTarget): string {
  const ref = agentRef(target);
  return `${ref.workspaceId}/${ref.agent}`;
}

/** The agent an agentKey names (keys travel between replicas as strings). */
export function parseAgentKey(key: string): AgentRef {
  const slash = key.indexOf('/');
  return slash < 0 ? agentRef(key) : { workspaceId: key.slice(0, slash), agent: key.slice(slash + 1) };
}

/**
 * What the rest of the server needs from agent connections. Implemented in ./hub.ts.
 * Designed for scale-out: a caller never assumes the agent is connected to this process
 * (a later relay implements the same interface across replicas).
 */
export interface AgentHub {
  /**
   * Resolves when the agent, connected with a token of `buildId`, reports lifecycle `ready`;
   * rejects with an AppError on `start_error`, timeout or abort.
   */
  waitForReady(agent: AgentTarget, buildId: string, options: { timeoutMs: number; signal?: AbortSignal }): Promise<void>;
  isConnected(agent: AgentTarget): boolean;
  /** Asks the agent to shut down gracefully (before stop/delete); resolves when it is gone or after timeoutMs. */
  shutdown(agent: AgentTarget, options: { timeoutMs: number }): Promise<void>;
  /** Opens an exec channel. Throws AppError AGENT_NOT_CONNECTED when the agent is not there. */
  exec(agent: AgentTarget, request: ExecRequest): Promise<ExecSession>;
  /**
   * Opens a channel of any kind (terminal, terminal-admin) with our receive `window`; `attach`
   * runs when the agent accepted and returns the endpoint its frames go to. Throws AppError
   * AGENT_NOT_CONNECTED when the agent is not there, or the agent's refusal.
   */
  openChannel(agent: AgentTarget, spec: ChannelSpec, window: number, attach: (channel: number, peerWindow: number, link: ChannelLink) => ChannelEndpoint): Promise<number>;
  close(): Promise<void>;
}

export interface ExecRequest {
  command: string[];
  env?: Record<string, string>;
  cwd?: string;
  /** allocate a pty instead of pipes */
  tty?: boolean;
  /** the pty's initial size when tty is set (80x24 when absent) */
  ttySize?: { cols: number; rows: number };
}

export interface ExecSession {
  /** write = stdin; read = stdout */
  stdio: Duplex;
  stderr: NodeJS.ReadableStream;
  /** resolves with the exit code (128 + signal number when killed by a signal) */
  exit: Promise<number>;
  /** the signal that ended the command (`SIGTERM`), once `exit` resolved; undefined when it exited by itself */
  readonly signal: string | undefined;
  closeStdin(): void;
  kill(signal?: NodeJS.Signals): void;
  /** resizes the pty of a tty exec (ignored without one) */
  resize(cols: number, rows: number): void;
  /**
   * Hands every stdout payload to `take` instead of `stdio` (the app proxy's body splice,
   * server/apps/body-splice.ts): `take` passes on what the stream should still get with `deliver`,
   * and counts what it keeps elsewhere with `hold` until that drained (`release`), so the channel's
   * credit still follows the consumer. Channels of this server have it; others may not.
   */
  divertOutput?(take: (payload: Buffer) => void): OutputDivert;
}

/** What a diverted output passes on (`deliver`) and keeps credit for (`hold` / `release`). */
export interface OutputDivert {
  deliver(payload: Buffer): void;
  hold(bytes: number): void;
  release(bytes: number): void;
}

/** What a server-side channel receives from its connection. */
export interface ChannelEndpoint {
  onData(type: 'data' | 'stderr', payload: Uint8Array): void;
  onWindow(bytes: number): void;
  onEof(): void;
  onClose(frame: ControlFrameOf<'close'>): void;
  /** the link went away */
  onLinkLost(): void;
}

/** How a channel endpoint talks back over its agent connection. */
export interface ChannelLink {
  send(frame: AgentFrame): void;
  /** forget the channel (after we sent or received its close) */
  release(): void;
}
