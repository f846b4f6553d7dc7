import { collectRelayedGarbageYoung } from '../protocol/heap.ts';
import { dial, socketBaseUrl } from './dial.ts';
import type { ChannelContext, ChannelHandler } from './exec.ts';

/**
 * The den agent's entry point: `node agent/main.ts` or the bundled `dist/agent.mjs`.
 * Reads DEN_AGENT_URL and DEN_AGENT_TOKEN and keeps the link to the server until told to stop.
 * The token is left out of the environment children inherit, so it does not show up in `env`;
 * workspace code running as the same user can still read it, from /proc/<agent pid>/environ, as
 * in every product of this kind. den treats the agent as untrusted: its token reaches only its
 * own workspace's data, and what it sends is checked and capped (server/agents/hub.ts).
 * DEN_AGENT_SOCKET, when set, is a unix socket to dial instead of the URL.
 */
async function main(): Promise<void> {
  collectRelayedGarbageYoung();
  // the service supervisor of `afterSync: restart` (agent/supervise.ts), and the command that restarts it
  if (process.argv[2] === 'supervise') {
    const { supervise } = await import('./supervise.ts');
    const rest = process.argv.slice(3);
    return supervise(rest[0] === '--' ? rest.slice(1) : rest);
  }
  if (process.argv[2] === 'restart-service') {
    const { restartService } = await import('./supervise.ts');
    process.exit(await restartService());
  }
  const socket = process.env.DEN_AGENT_SOCKET;
  const url = socket ? socketBaseUrl(socket) : process.env.DEN_AGENT_URL;
  const token = process.env.DEN_AGENT_TOKEN;
  if (!url || !token) {
    process.stderr.write('den agent: DEN_AGENT_URL and DEN_AGENT_TOKEN must be set; the den server passes them when it starts the agent.\n');
    process.exit(2);
  }
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && key !== 'DEN_AGENT_TOKEN') env[key] = value;
  }
  delete process.env.DEN_AGENT_TOKEN;

  const log = (message: string) => process.stderr.write(`den agent: ${message}\n`);
  // DEN_AGENT_TIMING=1 logs start-up milestones in ms since the process started
  const milestone = process.env.DEN_AGENT_TIMING
    ? (name: string) => {
        const cpu = process.cpuUsage();
        log(`${name} at ${performance.now().toFixed(1)} ms (cpu ${((cpu.user + cpu.system) / 1000).toFixed(1)} ms)`);
      }
    : undefined;

  // Dial first, then load the rest (zod, the protocol, exec): the handshake overlaps module evaluation.
  const dialed = dial(url, token);
  dialed.on('error', () => {}); // until the link takes the socket over; it retries a failed first dial
  milestone?.('dialing');
  const [{ startAgent }, { deferredOpener }] = await Promise.all([import('./link.ts'), import('./terminal/deferred.ts')]);
  milestone?.('modules loaded');
  // The terminal code loads while the link says hello. One registry per agent process: sessions
  // outlive link drops and server restarts, not the agent. New sessions get the workspace env and
  // home from the channel (the manifest arrives with the welcome).
  const terminal = loadTerminalOrRefuse(log);
  const agent = startAgent({
    url,
    token,
    env,
    log,
    dialed,
    channels: {
      terminal: deferredOpener(terminal.then((loaded) => loaded.terminal)),
      'terminal-admin': deferredOpener(terminal.then((loaded) => loaded.admin)),
    },
    onExit: (code) => {
      // hang up every shell's process group: a stopped workspace keeps no shell behind
      void terminal.then((loaded) => loaded.sessions.closeAll()).finally(() => process.exit(code));
    },
    onMilestone: milestone,
  });

  // First SIGTERM/SIGINT: graceful (report shutting_down, end children, report off). Second: hard.
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      log(`${signal} again: exiting now`);
      agent.kill(); // onExit hangs up the terminal sessions
      return;
    }
    signalled = true;
    void agent.shutdown(`received ${signal}`);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('uncaughtException', (error) => {
    // the agent is the only way into the workspace: log and keep serving rather than exit
    log(`unexpected error: ${error.stack ?? error.message}`);
  });
}

async function loadTerminal(log: (message: string) => void) {
  const [{ TerminalSessions }, { terminalChannelOpener }, { terminalAdminOpener }] = await Promise.all([
    import('./terminal/registry.ts'),
    import('./terminal/channel.ts'),
    import('./terminal/admin.ts'),
  ]);
  const sessions = new TerminalSessions({ orphanTimeoutMs: orphanTimeoutMs(log) });
  return { sessions, terminal: terminalChannelOpener(sessions), admin: terminalAdminOpener(sessions) };
}

/** loadTerminal, or, when node-pty cannot load in this image, openers that say so (the rest of the agent keeps working). */
function loadTerminalOrRefuse(log: (message: string) => void): ReturnType<typeof loadTerminal> {
  return loadTerminal(log).catch((error: unknown) => {
    log(`terminals are unavailable: ${(error as Error).message}`);
    const refuse = (channel: number, _spec: unknown, _window: number, context: ChannelContext, onClosed: () => void): ChannelHandler => {
      context.send({ type: 'open_error', channel, code: 'TERMINAL_START_FAILED', message: 'The workspace agent cannot start terminals here (node-pty did not load); see the agent log.' });
      onClosed();
      return { onData() {}, onEof() {}, onWindow() {}, onSignal() {}, onResize() {}, abort() {} };
    };
    return { sessions: { closeAll() {} }, terminal: refuse, admin: refuse } as unknown as Awaited<ReturnType<typeof loadTerminal>>;
  });
}

/** DEN_TERMINAL_ORPHAN_TIMEOUT_MS: how long a terminal session with no client lives on (default 1 h). */
function orphanTimeoutMs(log: (message: string) => void): number | undefined {
  const raw = process.env.DEN_TERMINAL_ORPHAN_TIMEOUT_MS;
  if (raw === undefined || raw === '') return undefined;
  const value = Number(raw);
  if (Number.isInteger(value) && value > 0) return value;
  log(`DEN_TERMINAL_ORPHAN_TIMEOUT_MS=${raw} is not a positive integer of milliseconds; using the default`);
  return undefined;
}

void main();
