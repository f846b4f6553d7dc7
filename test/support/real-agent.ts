import { spawn, type ChildProcess } from 'node:child_process';
import type { AgentManifestInput } from '../../protocol/agent.ts';
import { agentCommand } from '../../server/agents/bundle.ts';
import { issueAgentToken } from '../../server/agents/tokens.ts';
import type { TestServer } from './harness.ts';
import type { SeededWorkspace } from './workspace-seed.ts';

const READY_TIMEOUT_MS = 20_000;

/**
 * Starts the real agent process for a seeded workspace (as the process runtime would, without
 * its sandbox, or inside `wrapper`) with `home` as HOME, and waits until it reports ready. Kill it when done.
 */
export async function startRealAgent(server: TestServer, workspace: SeededWorkspace, home: string, manifest: AgentManifestInput, options: { wrapper?: string[] } = {}): Promise<ChildProcess> {
  const token = await issueAgentToken(server.store.db, { workspaceId: workspace.workspaceId, buildId: workspace.buildId, manifest, now: new Date() });
  const agentRun = agentCommand();
  // a wrapper (bwrap ...) runs the agent inside it: `wrapper... command args...`
  const [command, ...args] = [...(options.wrapper ?? []), agentRun.command, ...agentRun.args];
  const agent = spawn(command, args, {
    env: { ...process.env, HOME: home, SHELL: '/bin/bash', DEN_AGENT_URL: server.url!, DEN_AGENT_TOKEN: token },
    stdio: ['ignore', 'ignore', process.env.DEN_TEST_LOG ? 'inherit' : 'ignore'],
  });
  await server.den.agents.waitForReady(workspace.workspaceId, workspace.buildId, { timeoutMs: READY_TIMEOUT_MS });
  return agent;
}
