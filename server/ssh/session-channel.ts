import type { Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { ServerChannel, Session } from 'ssh2';
import { isAppError } from '../../protocol/errors.ts';
import type { AgentHub, ExecRequest, ExecSession } from '../agents/hub-types.ts';
import type { ForwardedAgent } from './agent-forward.ts';
import { pipeBounded, type Transport } from './backpressure.ts';

/**
 * One SSH `session` channel mapped onto one agent exec channel: `pty-req` and `env` gather what
 * the command starts with, then `shell`, `exec` or `subsystem sftp` starts it (with a pty when one
 * was asked for); stdin, stdout and stderr are piped with backpressure both ways (the ssh2
 * channel window and the agent link's credit), `window-change` resizes the pty, `signal` is
 * delivered, and the exit status or signal goes back to the client. `auth-agent-req` forwards the
 * client's agent when the workspace's template allows it (the command gets SSH_AUTH_SOCK).
 */
export interface SessionChannelContext {
  agents: AgentHub;
  workspaceId: string;
  /** a sentence when the session cannot run (workspace stopped, limit reached...); checked when the command starts */
  refusal(): Promise<string | undefined>;
  /** called on every chunk of client input, to record activity */
  onActivity(): void;
  onError(error: unknown): void;
  /** forwards the client's SSH agent into the workspace for this session; undefined when refused (never rejects) */
  forwardAgent(): Promise<ForwardedAgent | undefined>;
  /** the SSH connection's socket (or tunnel stream): output waits while it holds too much */
  transport: Transport;
}

/** The variables a client may pass with `env` (SendEnv), as OpenSSH's AcceptEnv would allow: locale and terminal only. */
const ACCEPTED_ENV = /^(LANG|LANGUAGE|LC_[A-Z]+|TERM|COLORTERM|TERM_PROGRAM|TERM_PROGRAM_VERSION|TZ|NO_COLOR)$/;
const MAX_ENV_VARS = 64;

/**
 * OpenSSH runs a command with the user's shell; ours is bash where the image has it, sh otherwise
 * (the workspace's SHELL may name a shell outside it on the process runtime).
 */
const SHELL_PICK = 'if command -v bash >/dev/null 2>&1; then exec bash "$@"; else exec sh "$@"; fi';
/** Where Debian, Fedora, Alpine and Arch put OpenSSH's sftp-server (exported for the test that hides them all). */
export const SFTP_SERVER_PATHS = ['/usr/lib/openssh/sftp-server', '/usr/libexec/openssh/sftp-server', '/usr/lib/ssh/sftp-server', '/usr/libexec/sftp-server', '/usr/lib/sftp-server'];
const SFTP_SERVER = [
  `for s in ${SFTP_SERVER_PATHS.join(' ')}; do`,
  '  if [ -x "$s" ]; then exec "$s"; fi',
  'done',
  'echo "This workspace has no sftp-server, so sftp and scp (which uses sftp) cannot reach it. Add the openssh-sftp-server package to its image, or use scp -O." >&2',
  'exit 127',
].join('\n');

export function serveSessionChannel(session: Session, context: SessionChannelContext): void {
  const env: Record<string, string> = {};
  let pty: { cols: number; rows: number; term: string } | undefined;
  let running: ExecSession | undefined;

  session.on('pty', (accept, reject, info) => {
    if (running) return reject?.();
    pty = { cols: clamp(info.cols, 80), rows: clamp(info.rows, 24), term: /^[\w.+-]{1,64}$/.test(info.term) ? info.term : 'xterm-256color' };
    accept?.();
  });
  session.on('env', (accept, reject, info) => {
    const value = String(info.val);
    if (running || !ACCEPTED_ENV.test(info.key) || Object.keys(env).length >= MAX_ENV_VARS || value.length > 4096) return reject?.();
    env[info.key] = value;
    accept?.();
  });
  session.on('window-change', (accept, _reject, info) => {
    const cols = clamp(info.cols, 80);
    const rows = clamp(info.rows, 24);
    if (pty) pty = { ...pty, cols, rows };
    running?.resize(cols, rows);
    accept?.();
  });
  session.on('signal', (accept, reject, info) => {
    const name = `SIG${String(info.name).toUpperCase()}`;
    if (!running || !/^SIG[A-Z0-9]{1,16}$/.test(name)) return reject?.();
    running.kill(name as NodeJS.Signals);
    accept?.();
  });
  let agentForward: Promise<ForwardedAgent | undefined> | undefined;
  /** a shell, exec or subsystem was asked for: a forward asked later would reach no command */
  let started = false;
  session.on('auth-agent', (accept, reject) => {
    if (started || agentForward) return reject?.();
    agentForward = context.forwardAgent();
    // OpenSSH asks without want_reply; a client that wants a reply gets it once the template was read
    void agentForward.then((forwarded) => (forwarded ? accept?.() : reject?.()));
  });
  session.once('close', () => void agentForward?.then((forwarded) => forwarded?.close()));
  // X11 is not offered
  session.on('x11', (_accept, reject) => reject?.());

  const start = (channel: ServerChannel, command: string[], tty: boolean) => {
    started = true;
    // ssh2's channel overrides destroy(), so `destroyed` never says the client closed it: track it
    let gone = false;
    channel.once('close', () => (gone = true));
    void run(channel, command, tty, () => gone).catch((error) => {
      context.onError(error);
      if (!gone) endWith(channel, 'den could not run the command in the workspace; try again.', 1);
    });
  };
  const run = async (channel: ServerChannel, command: string[], tty: boolean, gone: () => boolean) => {
    const refusal = await context.refusal();
    if (refusal) return endWith(channel, refusal, 1);
    const forwarded = await agentForward;
    const request: ExecRequest = {
      command,
      env: { ...env, ...(pty ? { TERM: pty.term } : {}), ...(forwarded ? { SSH_AUTH_SOCK: forwarded.socketPath } : {}) },
      ...(tty && pty ? { tty: true, ttySize: { cols: pty.cols, rows: pty.rows } } : {}),
    };
    let exec: ExecSession;
    try {
      exec = await context.agents.exec(context.workspaceId, request);
    } catch (error) {
      if (isAppError(error)) return endWith(channel, error.message, 1);
      throw error;
    }
    running = exec;
    channel.on('data', context.onActivity);
    channel.pipe(exec.stdio);
    pipeBounded(exec.stdio, channel, context.transport, { end: false });
    pipeBounded(exec.stderr as Readable, channel.stderr, context.transport, { end: false });
    // the client went away: end what runs in the workspace
    channel.once('close', () => {
      if (!exec.stdio.destroyed) exec.stdio.destroy();
    });
    if (gone()) exec.stdio.destroy();
    const code = await exec.exit.catch((error: unknown) => {
      if (isAppError(error) && !gone()) channel.stderr.write(`${error.message}\r\n`);
      return 255;
    });
    // all output first, then the status: what the command wrote must reach the client before it exits
    await Promise.all([finished(exec.stdio, { writable: false }).catch(() => {}), finished(exec.stderr as NodeJS.ReadableStream).catch(() => {})]);
    if (gone()) return;
    if (exec.signal) channel.exit(exec.signal.replace(/^SIG/, ''), false, '');
    else channel.exit(code);
    channel.end();
  };

  session.on('shell', (accept) => {
    const channel = accept?.();
    if (channel) start(channel, ['/bin/sh', '-c', SHELL_PICK, 'sh', '-l'], true);
  });
  session.on('exec', (accept, _reject, info) => {
    const channel = accept?.();
    if (channel) start(channel, ['/bin/sh', '-c', SHELL_PICK, 'sh', '-c', info.command], true);
  });
  session.on('subsystem', (accept, reject, info) => {
    if (info.name !== 'sftp') return reject?.();
    const channel = accept?.();
    // sftp speaks binary on stdin/stdout: never through a pty
    if (channel) start(channel, ['/bin/sh', '-c', SFTP_SERVER], false);
  });
}

/** Tells the client why, on stderr, and ends the channel with `status`. */
function endWith(channel: ServerChannel, message: string, status: number): void {
  channel.stderr.write(`${message}\r\n`);
  channel.exit(status);
  channel.end();
}

/** A terminal dimension as the agent accepts it (1..1000); `fallback` when the client sent 0 (unknown, as `ssh -tt` from a pipe does). */
function clamp(size: number, fallback: number): number {
  return Math.min(1000, Math.max(1, Math.floor(size) || fallback));
}
