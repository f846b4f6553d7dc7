import { createHash, randomUUID } from 'node:crypto';
import type { StartContext, WorkspaceIdentity, WorkspacePlan } from '../../server/runtimes/driver.ts';

/**
 * Plans and contexts for tests that drive the kubernetes driver directly (without the planner):
 * a workspace identity, a plan with the agent baked into the image, and a start context that
 * records the build log and the secrets asked for.
 */
export function identity(name: string, id: string = randomUUID()): WorkspaceIdentity {
  return { id, name, ownerId: createHash('sha256').update(name).digest('hex').slice(0, 12), ownerName: 'tester', template: 'test-template' };
}

export function recordingContext(token = 'unused'): StartContext & { lines: string[]; asked: string[] } {
  const lines: string[] = [];
  const asked: string[] = [];
  return { lines, asked, log: (line) => lines.push(line), signal: new AbortController().signal, secret: async (name) => (asked.push(name), token) };
}

export function basePlan(workspace: WorkspaceIdentity, input: { image: string; agentUrl: string } & Partial<Pick<WorkspacePlan, 'services' | 'resources' | 'agent'>>): WorkspacePlan {
  return {
    workspace,
    image: input.image,
    resources: input.resources ?? {},
    home: {},
    env: { DEN_WORKSPACE_NAME: workspace.name },
    agent: input.agent ?? { name: 'main', url: input.agentUrl, revision: 'r1', delivery: { kind: 'image' } },
    secrets: [{ name: 'agent-token', env: 'DEN_AGENT_TOKEN', agent: 'main' }],
    services: input.services ?? [],
  };
}
