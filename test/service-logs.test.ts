import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execInWorkspace } from './support/exec.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { readTemplateFolder, waitForWorkspaceReady } from './support/templates.ts';
import { api, setupOwner, type Api, type TestUser } from './support/users.ts';

/**
 * Service logs after start, end to end on the process runtime: the API route (tail, follow, an
 * unknown service) and `den logs WS --service NAME`. The drivers' side (both runtimes) is in the
 * driver contract suite.
 */
const ROOT = resolve(import.meta.dirname, '..');
const READY_TIMEOUT_MS = 20_000;
const home = mkdtempSync(join(tmpdir(), 'den-service-logs-'));

describe('service logs', () => {
  let server: TestServer;
  let user: TestUser;
  let client: Api;

  beforeAll(async () => {
    server = await startTestServer({ listen: true });
    user = await setupOwner(server.app);
    client = api(server.app, user.token);
    const pushed = await client.post('/api/v1/templates', { files: readTemplateFolder(join(ROOT, 'templates/node-api')), activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    const created = await client.post('/api/v1/workspaces', { name: 'shop', template: 'node-api' });
    expect(created.status, JSON.stringify(created.json)).toBe(202);
    await waitForWorkspaceReady(client, user.username, 'shop', READY_TIMEOUT_MS);
  });
  afterAll(async () => {
    await server?.close();
    rmSync(home, { recursive: true, force: true });
  });

  const logsPath = (service: string, query = '') => `/api/v1/workspaces/${user.username}/shop/services/${service}/logs${query}`;
  // `connection: close`: an idle keep-alive socket from this process held up the server's close.
  const get = (path: string, signal?: AbortSignal) => fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${user.token}`, connection: 'close' }, signal });

  it('answers with the service\'s lines as NDJSON, the last N with ?tail', async () => {
    // The api service prints one line per request; its readiness check asked for /healthz.
    const all = await get(logsPath('api'));
    expect(all.status).toBe(200);
    expect(all.headers.get('content-type')).toContain('application/x-ndjson');
    const lines = (await all.text()).trim().split('\n').map((line) => JSON.parse(line));
    expect(lines).toContainEqual({ stream: 'stdout', line: 'GET /healthz' });

    const tail = await get(logsPath('api', '?tail=1'));
    expect((await tail.text()).trim().split('\n')).toHaveLength(1);
  });

  it('streams new lines with ?follow=1 until the client goes away', async () => {
    const abort = new AbortController();
    const response = await get(logsPath('api', '?follow=1&tail=0'), abort.signal);
    expect(response.status).toBe(200);
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    const { workspaceId, endpoint } = await apiEndpoint();
    let seen = '';
    const deadline = Date.now() + 10_000;
    // from inside the workspace: its services live in the workspace's own network
    const request = await execInWorkspace(server.den, workspaceId, ['node', '-e', `fetch('${endpoint}/followed').then((r) => r.text())`]);
    expect(request.code, request.stderr).toBe(0);
    while (!seen.includes('GET /followed') && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
    }
    await reader.cancel();
    abort.abort();
    expect(seen).toContain('{"stream":"stdout","line":"GET /followed"}');
  });

  it('answers an unknown service with a coded 404 that lists the services', async () => {
    const response = await client.get(logsPath('cache'));
    expect(response.status).toBe(404);
    expect(response.json.error.code).toBe('SERVICE_NOT_FOUND');
    expect(response.json.error.message).toBe(`Workspace ${user.username}/shop has no service 'cache'; its services are db, api. Run \`den logs ${user.username}/shop --service db\` for one of them.`);
  });

  it('prints a service\'s lines with den logs WS --service NAME --tail N', async () => {
    const result = await den(['logs', 'shop', '--service', 'api', '--tail', '1']);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toMatch(/^GET \/\S*\n$/);

    const unknown = await den(['logs', 'shop', '--service', 'cache']);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain('its services are db, api');
  });

  async function apiEndpoint(): Promise<{ workspaceId: string; endpoint: string }> {
    const { json } = await client.get(`/api/v1/workspaces/${user.username}/shop`);
    const workspace = json.workspace ?? json;
    const endpoints = await server.den.driver.resolveEndpoints(
      { id: workspace.id, name: 'shop', ownerId: user.userId, ownerName: user.username }, [{ service: 'api', ports: [3000] }],
    );
    return { workspaceId: workspace.id, endpoint: `http://${endpoints.api[3000].host}:${endpoints.api[3000].port}` };
  }

  function den(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolvePromise, reject) => {
      const child = spawn(process.execPath, [join(ROOT, 'bin/den.js'), ...args], {
        cwd: ROOT,
        // an empty config home: the server and token come from the environment only
        env: { PATH: process.env.PATH ?? '', HOME: home, XDG_CONFIG_HOME: home, DEN_URL: server.url!, DEN_TOKEN: user.token },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
      child.on('error', reject);
      child.on('close', (code) => resolvePromise({ code, stdout, stderr }));
    });
  }
});
