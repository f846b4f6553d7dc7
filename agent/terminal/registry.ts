import { AppError } from '../../protocol/errors.ts';
import { TerminalSession, type TerminalSessionInfo, type TerminalSessionOptions } from './session.ts';
import { realTimers, type TerminalTimers } from './timers.ts';

/** Coder ends orphaned sessions after 5 minutes; an hour survives a lunch break or a closed lid. */
export const DEFAULT_ORPHAN_TIMEOUT_MS = 60 * 60 * 1000;
/** Each session costs a shell and ~1-2 MB of mirror; a cap keeps a runaway client from forking the workspace to death. */
export const DEFAULT_MAX_SESSIONS = 200;

export interface TerminalSessionsOptions {
  /** how long a session with no attached client lives on */
  orphanTimeoutMs?: number;
  maxSessions?: number;
  /** applied to every session (the workspace shell, env, cwd, scrollback, flow) */
  defaults?: Omit<TerminalSessionOptions, 'id' | 'timers'>;
  timers?: TerminalTimers;
}

/**
 * The agent's terminal sessions by id: they outlive the clients (browser reloads, a dropped
 * agent link, a server restart) and end when the shell exits, when closed, or after
 * `orphanTimeoutMs` without any client — then the shell's whole process group is hung up.
 */
export class TerminalSessions {
  readonly #sessions = new Map<string, TerminalSession>();
  readonly #orphanTimers = new Map<string, unknown>();
  readonly #timers: TerminalTimers;
  readonly #orphanTimeoutMs: number;
  readonly #maxSessions: number;
  readonly #defaults: Omit<TerminalSessionOptions, 'id' | 'timers'>;

  constructor(options: TerminalSessionsOptions = {}) {
    this.#timers = options.timers ?? realTimers;
    this.#orphanTimeoutMs = options.orphanTimeoutMs ?? DEFAULT_ORPHAN_TIMEOUT_MS;
    this.#maxSessions = options.maxSessions ?? DEFAULT_MAX_SESSIONS;
    this.#defaults = options.defaults ?? {};
  }

  /** Starts a new session; it counts as orphaned until a client attaches. */
  create(options: Omit<TerminalSessionOptions, 'timers'> = {}): TerminalSession {
    if (this.#sessions.size >= this.#maxSessions) {
      throw new AppError('TERMINAL_START_FAILED', `The workspace already has ${this.#maxSessions} terminal sessions; close some with \`den terminal close\` first.`);
    }
    if (options.id !== undefined && this.#sessions.has(options.id)) throw new AppError('TERMINAL_START_FAILED', `A terminal session '${options.id}' exists already; attach to it instead.`);
    let session: TerminalSession;
    try {
      // an option given as undefined keeps the default
      const given = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
      session = new TerminalSession({ ...this.#defaults, ...given, env: { ...this.#defaults.env, ...options.env }, timers: this.#timers });
    } catch (error) {
      throw new AppError('TERMINAL_START_FAILED', 'The terminal shell could not be started; check that the workspace shell exists.', { cause: error, detail: String(error) });
    }
    this.#sessions.set(session.id, session);
    session.onClientCount((count) => (count === 0 ? this.#startOrphanTimer(session) : this.#stopOrphanTimer(session.id)));
    session.onExit(() => {
      this.#stopOrphanTimer(session.id);
      this.#sessions.delete(session.id);
    });
    this.#startOrphanTimer(session);
    return session;
  }

  get(id: string): TerminalSession | undefined {
    return this.#sessions.get(id);
  }

  /** The session, or TERMINAL_SESSION_NOT_FOUND for an id that never existed or has ended. */
  require(id: string): TerminalSession {
    const session = this.#sessions.get(id);
    if (!session) throw new AppError('TERMINAL_SESSION_NOT_FOUND', `Terminal session '${id}' has ended or never existed; open a new terminal.`);
    return session;
  }

  list(): TerminalSessionInfo[] {
    return [...this.#sessions.values()].map((session) => session.info());
  }

  /** Hangs up the session's shell; false when there is no such session. */
  close(id: string): boolean {
    const session = this.#sessions.get(id);
    if (!session) return false;
    session.close();
    return true;
  }

  /** Hangs up every session (the agent's hard shutdown). */
  closeAll(): void {
    for (const session of this.#sessions.values()) session.close();
  }

  #startOrphanTimer(session: TerminalSession): void {
    if (this.#orphanTimers.has(session.id) || session.exited) return;
    this.#orphanTimers.set(
      session.id,
      this.#timers.setTimeout(() => {
        this.#orphanTimers.delete(session.id);
        if (session.clientCount === 0) session.close();
      }, this.#orphanTimeoutMs),
    );
  }

  #stopOrphanTimer(id: string): void {
    const timer = this.#orphanTimers.get(id);
    if (timer === undefined) return;
    this.#timers.clearTimeout(timer);
    this.#orphanTimers.delete(id);
  }
}
