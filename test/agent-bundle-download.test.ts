import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueAgentToken, revokeAgentTokens } from '../server/agents/tokens.ts';
import { idleDriver } from './support/idle-driver.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { seedWorkspace, type SeededWorkspace } from './support/workspace-seed.ts';

/**
 * GET /api/v1/agent/bundle: what a runtime that cannot mount den's files (a Kubernetes init
 * container) downloads to put the agent in place, with a checksum to verify before unpacking.
 */
describe('agent bundle download', { timeout: 120_000 }, () => {
  let server: TestServer;
  let workspace: SeededWorkspace;
  let token: string;
  const scratch = mkdtempSync(join(tmpdir(), 'den-bundle-download-'));

  beforeAll(async () => {
    server = await startTestServer({ listen: true, startWorkers: false, driver: () => idleDriver });
    workspace = await seedWorkspace(server.store.db, { username: 'fetcher', workspaceName: 'init' });
    token = await issueAgentToken(server.store.db, { workspaceId: workspace.workspaceId, buildId: workspace.buildId, manifest: {}, now: new Date() });
  });
  afterAll(async () => {
    await server?.close();
    rmSync(scratch, { recursive: true, force: true });
  });

  const get = (authorization?: string) => fetch(`${server.url}/api/v1/agent/bundle`, { headers: authorization ? { authorization } : {} });

  it('serves the bundle as a tar whose sha256 is the one in the header, the same on every download', async () => {
    const response = await get(`Bearer ${token}`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('application/x-tar');
    const body = Buffer.from(await response.arrayBuffer());
    const sha256 = response.headers.get('x-den-agent-sha256');
    expect(createHash('sha256').update(body).digest('hex')).toBe(sha256);
    const file = join(scratch, 'agent.tar');
    writeFileSync(file, body);
    const entries = execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).split('\n');
    expect(entries).toEqual(expect.arrayContaining(['./node', './agent.mjs', './BUNDLE', './node_modules/node-pty/package.json']));

    const again = await get(`Bearer ${token}`);
    expect(again.headers.get('x-den-agent-sha256')).toBe(sha256);
    await again.arrayBuffer();
  });

  it('refuses anyone without a live agent token with AGENT_UNAUTHORIZED', async () => {
    for (const authorization of [undefined, 'Bearer denagent_not-a-token', 'Bearer something-else']) {
      const response = await get(authorization);
      expect(response.status).toBe(401);
      expect((await response.json()).error.code).toBe('AGENT_UNAUTHORIZED');
    }
    await revokeAgentTokens(server.store.db, workspace.workspaceId, new Date());
    const revoked = await get(`Bearer ${token}`);
    expect(revoked.status).toBe(401);
    expect((await revoked.json()).error.code).toBe('AGENT_UNAUTHORIZED');
  });
});
