import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Api } from './users.ts';

/** A template folder as the push API takes it: relative path -> UTF-8 content. */
export function readTemplateFolder(dir: string): Record<string, string> {
  const files: Record<string, string> = {};
  const walk = (current: string) => {
    for (const entry of readdirSync(current)) {
      const path = join(current, entry);
      if (statSync(path).isDirectory()) walk(path);
      else files[relative(dir, path).split('\\').join('/')] = readFileSync(path, 'utf8');
    }
  };
  walk(dir);
  return files;
}

/**
 * Polls until the workspace runs with its agent ready; on failure or after `timeoutMs` throws
 * with the workspace and its first build's log, so a red test says why.
 */
export async function waitForWorkspaceReady(client: Api, owner: string, name: string, timeoutMs: number): Promise<Record<string, any>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { json } = await client.get(`/api/v1/workspaces/${owner}/${name}`);
    const workspace = json.workspace ?? json;
    if (workspace.status === 'running' && workspace.agentState === 'ready') return workspace;
    if (workspace.status === 'failed' || Date.now() > deadline) {
      const logs = await client.get(`/api/v1/workspaces/${owner}/${name}/builds/1/logs`);
      throw new Error(`Workspace ${name} did not become ready within ${timeoutMs} ms: ${JSON.stringify(workspace)}\n${typeof logs.json === 'string' ? logs.json : JSON.stringify(logs.json)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
