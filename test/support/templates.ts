import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { expect } from 'vitest';
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

/**
 * Re-applies a workspace in place (`den update` to the same version), waits for that build and
 * returns its log; fails the test with the log when the build did not succeed.
 */
export async function reApply(app: FastifyInstance, client: Api, token: string, path: string, timeoutMs: number): Promise<string> {
  const queued = await client.post(`${path}/update`);
  expect(queued.status, JSON.stringify(queued.json)).toBe(202);
  const number = queued.json.build.number as number;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const build = (await client.get(`${path}/builds/${number}`)).json;
    if (build.state === 'succeeded' || build.state === 'failed') break;
    if (Date.now() > deadline) throw new Error(`build ${number} did not finish within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const logs = await app.inject({ method: 'GET', url: `${path}/builds/${number}/logs`, headers: { authorization: `Bearer ${token}`, accept: 'application/x-ndjson' } });
  const lines = logs.body.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line)).flatMap((item) => item.lines ?? [item]) as { line: string }[];
  const text = lines.map((entry) => entry.line).join('\n');
  expect((await client.get(`${path}/builds/${number}`)).json.state, text).toBe('succeeded');
  return text;
}
