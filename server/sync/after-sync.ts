import type { AgentHub } from '../agents/hub-types.ts';
import { AGENT_COMMAND } from '../runtimes/agent-bundle.ts';

/** What a synced service does after each applied batch (template `afterSync`). */
export type AfterSyncAction = { run: string } | 'restart';

export interface AfterSyncOptions {
  workspaceId: string;
  service: string;
  action: AfterSyncAction;
  agents: AgentHub;
  event(kind: string, message: string, detail: Record<string, unknown>): void;
  /** the service's process was restarted: its new pid */
  restarted(pid: number): void;
  stopped(): boolean;
}

/** The most of the restart command's output read (one JSON line). */
const MAX_OUTPUT_BYTES = 4096;

/**
 * Runs a service's afterSync action through the agent beside it, one at a time: batches that land
 * while it runs are answered by one more run after it (a burst restarts the service twice, not a
 * hundred times). `restart` asks the service's supervisor (agent/supervise.ts, docker) to restart
 * the command in place, so the container, the agent and the sync stay up.
 */
export class AfterSync {
  private readonly options: AfterSyncOptions;
  private running = false;
  private again = false;

  constructor(options: AfterSyncOptions) {
    this.options = options;
  }

  trigger(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    void this.runOnce().finally(() => {
      this.running = false;
      if (this.again && !this.options.stopped()) {
        this.again = false;
        this.trigger();
      }
    });
  }

  private async runOnce(): Promise<void> {
    const { service, action } = this.options;
    const what = action === 'restart' ? `The restart of the ${service} service after a sync` : `The afterSync command of the ${service} service`;
    try {
      const command = action === 'restart' ? [...AGENT_COMMAND, 'restart-service'] : ['sh', '-c', action.run];
      const session = await this.options.agents.exec({ workspaceId: this.options.workspaceId, agent: service }, { command });
      const stdout = collect(session.stdio);
      const stderr = collect(session.stderr);
      const code = await session.exit;
      if (code !== 0) {
        const said = action === 'restart' ? ` ${(await stderr).trim()}` : '';
        this.options.event('sync.after-sync', `${what} exited with status ${code};${said} check it with \`den exec --service ${service}\`.`, { service, exitCode: code });
        return;
      }
      if (action !== 'restart') return;
      const pid = (parseLine(await stdout) as { pid?: unknown } | undefined)?.pid;
      if (typeof pid !== 'number') throw new Error('the agent did not say which process now runs');
      this.options.restarted(pid);
      this.options.event('sync.restart', `Restarted the ${service} service's process after a sync (now pid ${pid}).`, { service, pid });
    } catch (error) {
      this.options.event('sync.after-sync', `${what} could not run: ${(error as Error).message}`, { service });
    }
  }
}

/** The first MAX_OUTPUT_BYTES of a stream (the rest is read and dropped). */
function collect(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  stream.on('data', (chunk: Buffer) => {
    if (bytes >= MAX_OUTPUT_BYTES) return;
    chunks.push(chunk.subarray(0, MAX_OUTPUT_BYTES - bytes));
    bytes += chunk.byteLength;
  });
  return new Promise((resolve) => {
    const done = () => resolve(Buffer.concat(chunks).toString('utf8'));
    stream.on('end', done);
    stream.on('close', done);
    stream.on('error', done);
  });
}

function parseLine(text: string): unknown {
  try {
    return JSON.parse(text.trim().split('\n')[0] ?? '');
  } catch {
    return undefined;
  }
}
