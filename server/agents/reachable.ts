import type { Kysely } from 'kysely';
import { MAIN_AGENT } from '../../protocol/agent.ts';
import { AppError } from '../../protocol/errors.ts';
import { workspaceDownError } from '../reconcile/health.ts';
import type { Database, WorkspacesTable } from '../store/schema.ts';
import type { AgentHub, AgentRef } from './hub-types.ts';
import { workspaceAgents } from './registry.ts';

/** Refuses with AGENT_NOT_FOUND a service the workspace runs no agent beside (none was ever planned for it). */
export async function assertServiceAgent(db: Kysely<Database>, workspace: Pick<Workspace, 'id' | 'name' | 'owner_name'>, service: string): Promise<void> {
  if ((await workspaceAgents(db, workspace.id)).includes(service)) return;
  throw new AppError('AGENT_NOT_FOUND',
    `Workspace '${workspace.owner_name}/${workspace.name}' runs no agent beside a service named '${service}'. \`den show ${workspace.name}\` lists its agents; a service gets one with \`agent: true\` in the template.`);
}

type Workspace = Pick<WorkspacesTable, 'id' | 'name' | 'status' | 'health' | 'health_message'> & { owner_name: string };

/**
 * The agent a user's exec or terminal goes to (the workspace's own, or the one beside `service`)
 * when it is connected; otherwise the coded error that says why not: the workspace is not
 * running (`notRunning` completes the sentence), it runs no agent beside that service, den saw
 * it down, or the agent is between two connections.
 */
export async function reachableAgent(
  db: Kysely<Database>, agents: Pick<AgentHub, 'isConnected'>, workspace: Workspace, service: string | undefined, notRunning: string,
): Promise<AgentRef> {
  const agent = { workspaceId: workspace.id, agent: service ?? MAIN_AGENT };
  if (agents.isConnected(agent)) return agent;
  const label = `${workspace.owner_name}/${workspace.name}`;
  if (workspace.status !== 'running' && workspace.status !== 'starting') {
    throw new AppError('WORKSPACE_NOT_RUNNING', `Workspace '${label}' is ${workspace.status}${notRunning}`);
  }
  if (service !== undefined) await assertServiceAgent(db, workspace, service);
  throw workspaceDownError(workspace) ?? new AppError('AGENT_NOT_CONNECTED',
    `The ${service ? `agent of service ${service}` : 'agent'} of workspace '${label}' is not connected right now. Wait a few seconds (it reconnects by itself) and try again, or restart the workspace.`);
}
