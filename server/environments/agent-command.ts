import type { AgentHub, AgentTarget } from '../agents/hub-types.ts';

export interface AgentCommandResult {
  /** the exit status (128 + signal number when killed), or undefined when den ended it (timeout, abort) */
  exitCode: number | undefined;
  timedOut: boolean;
}

/**
 * Runs a command through an agent (the exec channel `den exec` uses), with stdin closed, and
 * hands each chunk of its output to `onOutput` as it arrives. The command is killed when it
 * passes `timeoutMs` or `signal` aborts. The channel's flow control bounds what is held here:
 * output is passed on as read, never accumulated.
 */
export async function runAgentCommand(
  agents: Pick<AgentHub, 'exec'>,
  agent: AgentTarget,
  command: string[],
  options: { timeoutMs: number; signal?: AbortSignal; onOutput(stream: 'stdout' | 'stderr', chunk: Buffer): void },
): Promise<AgentCommandResult> {
  const session = await agents.exec(agent, { command });
  session.closeStdin();
  let timedOut = false;
  let ended = false;
  const kill = () => {
    if (!ended) session.kill('SIGKILL');
  };
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, options.timeoutMs);
  options.signal?.addEventListener('abort', kill, { once: true });
  const drained = Promise.all([
    drain(session.stdio, (chunk) => options.onOutput('stdout', chunk)),
    drain(session.stderr, (chunk) => options.onOutput('stderr', chunk)),
  ]);
  try {
    const code = await session.exit;
    ended = true;
    await drained;
    return { exitCode: timedOut || options.signal?.aborted ? undefined : code, timedOut };
  } finally {
    ended = true;
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', kill);
  }
}

function drain(stream: NodeJS.ReadableStream, onChunk: (chunk: Buffer) => void): Promise<void> {
  return new Promise((resolve) => {
    stream.on('data', (chunk: Buffer | string) => onChunk(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk)));
    stream.once('end', () => resolve());
    // a channel torn down mid-stream ends what was read so far; the exit status says the rest
    stream.once('error', () => resolve());
    stream.once('close', () => resolve());
  });
}
