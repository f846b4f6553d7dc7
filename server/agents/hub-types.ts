import type { Duplex } from 'node:stream';

/**
 * What the rest of the server needs from agent connections. Implemented in ./hub.ts.
 * Designed for scale-out: a caller never assumes the agent is connected to this process
 * (a later relay implements the same interface across replicas).
 */
export interface AgentHub {
  /**
   * Resolves when the agent of `workspaceId`, connected with a token of `buildId`, reports
   * lifecycle `ready`; rejects with an AppError on `start_error`, timeout or abort.
   */
  waitForReady(workspaceId: string, buildId: string, options: { timeoutMs: number; signal?: AbortSignal }): Promise<void>;
  isConnected(workspaceId: string): boolean;
  /** Asks the agent to shut down gracefully (before stop/delete); resolves when it is gone or after timeoutMs. */
  shutdown(workspaceId: string, options: { timeoutMs: number }): Promise<void>;
  /** Opens an exec channel. Throws AppError AGENT_NOT_CONNECTED when the agent is not there. */
  exec(workspaceId: string, request: ExecRequest): Promise<ExecSession>;
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
  closeStdin(): void;
  kill(signal?: NodeJS.Signals): void;
  /** resizes the pty of a tty exec (ignored without one) */
  resize(cols: number, rows: number): void;
}
