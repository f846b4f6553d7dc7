import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execInWorkspace } from '../../../test/support/exec.ts';
import { startTestServer, type TestServer } from '../../../test/support/harness.ts';
import { api, setupOwner, type Api } from '../../../test/support/users.ts';
import type { DockerApi } from './docker-api.ts';
import { createDockerDriver, type DockerDriver } from './driver.ts';
import { readTemplateFolder, waitForWorkspaceReady } from '../../../test/support/templates.ts';

/**
 * The example templates (templates/starter, templates/node-api) pushed and started through the
 * whole server — API, build worker, planner, agent — on the docker runtime.
 */
const TEMPLATES_DIR = join(import.meta.dirname, '..', '..', '..', 'templates');
const READY_TIMEOUT_MS = 90_000;
const IMAGES = ['den/base:bookworm', 'den/node:24'];

const docker = new Dockerode() as unknown as DockerApi;
const engine = await docker.ping().then(() => true, () => false);
const images = engine && (await Promise.all(IMAGES.map((name) => docker.getImage(name).inspect().then(() => true, () => false)))).every(Boolean);
const skipReason = !engine ? 'no Docker engine is reachable (run bash test/services/docker.sh)' : !images ? `${IMAGES.join(' and ')} are needed (run npm run images)` : undefined;
if (skipReason) console.warn(`[skip] example templates on the docker runtime: ${skipReason}.`);

describe.skipIf(skipReason !== undefined)('example templates on the docker runtime', () => {
  let server: TestServer;
  let driver: DockerDriver;
  let client: Api;
  let owner: string;
  const bundleDir = mkdtempSync(join(tmpdir(), 'den-docker-templates-'));

  beforeAll(async () => {
    server = await startTestServer({
      listen: true,
      driver: async () => (driver = await createDockerDriver({ log: pino({ level: 'silent' }), docker, agentBundleDir: join(bundleDir, 'agent'), stopGraceSeconds: 2, instance: `den-test-${randomUUID().slice(0, 8)}` })),
    });
    const user = await setupOwner(server.app);
    owner = user.username;
    client = api(server.app, user.token);
    for (const name of ['starter', 'node-api']) {
      const response = await client.post('/api/v1/templates', { files: readTemplateFolder(join(TEMPLATES_DIR, name)), activate: true });
      expect(response.status, JSON.stringify(response.json)).toBe(201);
    }
  });
  afterAll(async () => {
    // Lists only this test's den.instance, so collecting everything removes only what it made.
    await driver?.collectGarbage(() => false);
    await server?.close();
    rmSync(bundleDir, { recursive: true, force: true });
  });

  it('starts a starter workspace whose agent runs its startup scripts in the container', async () => {
    expect((await client.post('/api/v1/workspaces', { name: 'greet', template: 'starter', params: { greeting: 'hi from docker' } })).status).toBe(202);
    const workspace = await waitForWorkspaceReady(client, owner, 'greet', READY_TIMEOUT_MS);
    expect(await exec(workspace.id, ['sh', '-c', 'id -un; hostname; cat ~/.den-greeting'])).toBe('den\ngreet\nhi from docker\n');
  });

  it('starts node-api with both services reachable by name from the workspace', async () => {
    expect((await client.post('/api/v1/workspaces', { name: 'shop', template: 'node-api', params: { visits_start: '41' } })).status).toBe(202);
    const workspace = await waitForWorkspaceReady(client, owner, 'shop', READY_TIMEOUT_MS);
    const reply = await exec(workspace.id, ['node', '-e', 'fetch(process.env.API_URL).then((r) => r.text()).then((t) => process.stdout.write(t))']);
    expect(reply).toBe(`hello from ${owner}/shop, visit 42\n`);
  });

  // all of stdout, read to its end: the exit status may arrive before the last output is read
  async function exec(workspaceId: string, command: string[]): Promise<string> {
    return (await execInWorkspace(server.den, workspaceId, command)).stdout;
  }
});
