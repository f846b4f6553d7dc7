import type { AgentHub, AgentTarget } from '../../server/agents/hub-types.ts';

/**
 * Runs a command in a workspace through its agent (as `den exec` does) and collects its output;
 * `agent` is a workspace id (its main agent) or an AgentRef (a service's agent).
 */
export async function execInWorkspace(den: { agents: AgentHub }, agent: AgentTarget, command: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const session = await den.agents.exec(agent, { command });
  // stdin stays open until the exit code arrived: the commands here never read it.
  const stdout = collect(session.stdio);
  const stderr = collect(session.stderr);
  const code = await session.exit;
  session.closeStdin();
  return { code, stdout: await stdout, stderr: await stderr };
}

function collect(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  return new Promise((resolve, reject) => {
    stream.on('data', (chunk: Buffer) => chunks.push(Buffer.from(chunk)));
    stream.once('end', () => resolve(Buffer.concat(chunks).toString()));
    stream.once('error', reject);
  });
}
