import { dial } from './dial.ts';

/**
 * The den agent's entry point: `node agent/main.ts` or the bundled `dist/agent.mjs`.
 * Reads DEN_AGENT_URL and DEN_AGENT_TOKEN and keeps the link to the server until told to stop.
 * The token is removed from the environment children inherit, so workspace code cannot read it.
 */
async function main(): Promise<void> {
  const url = process.env.DEN_AGENT_URL;
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
  const { startAgent } = await import('./link.ts');
  milestone?.('modules loaded');
  const agent = startAgent({ url, token, env, log, dialed, onExit: (code) => process.exit(code), onMilestone: milestone });

  // First SIGTERM/SIGINT: graceful (report shutting_down, end children, report off). Second: hard.
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) {
      log(`${signal} again: exiting now`);
      agent.kill();
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

void main();
