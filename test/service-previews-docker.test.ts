import { rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dockerSkipReason, testDockerDriver } from './support/docker-driver.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { readTemplateFolder, waitForWorkspaceReady } from './support/templates.ts';
import { api, setupOwner, type Api, type TestUser } from './support/users.ts';

/**
 * templates/node-api on the docker runtime, opened from outside through its api service's
 * preview URL (docs/apps.md): den dials the service by its name on the workspace's network
 * through the workspace's agent, by path and by subdomain.
 */
const READY_TIMEOUT_MS = 90_000;
const IMAGE = 'den/node:24';

const docker = new Dockerode();
const dockerSkip = await dockerSkipReason(docker, [IMAGE]);
if (dockerSkip) console.warn(`[skip] service previews on the docker runtime: ${dockerSkip}.`);

describe('service preview URLs on the docker runtime', { timeout: 180_000 }, () => {
  if (dockerSkip) {
    // reported as skipped with the reason printed above, so CI (which forbids skips) notices
    it.skip(`needs Docker: ${dockerSkip}`);
    return;
  }
  let server: TestServer;
  let user: TestUser;
  let client: Api;
  const dirs: string[] = [];

  beforeAll(async () => {
    server = await startTestServer({ listen: true, config: { appsWildcardDomain: 'localtest' }, driver: testDockerDriver(docker, dirs) });
    user = await setupOwner(server.app);
    client = api(server.app, user.token);
    const pushed = await client.post('/api/v1/templates', { files: readTemplateFolder(join(import.meta.dirname, '..', 'templates', 'node-api')), activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
  });
  afterAll(async () => {
    await server?.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('answers through the api service\'s preview URL, by path and by subdomain', async () => {
    const created = await client.post('/api/v1/workspaces', { name: 'shop', template: 'node-api', params: { visits_start: 41 } });
    expect(created.status, JSON.stringify(created.json)).toBe(202);
    await waitForWorkspaceReady(client, user.username, 'shop', READY_TIMEOUT_MS);

    const listing = (await client.get(`/api/v1/workspaces/${user.username}/shop/ports`)).json;
    const preview = listing.apps.find((app: { name: string }) => app.name === 'api');
    expect(preview).toMatchObject({ service: 'api', port: 3000, share: 'owner' });
    expect(preview.url).toBe(`http://api--shop--${user.username}.localtest:${new URL(server.url!).port}/`);

    const byPath = await fetch(`${server.url}/@${user.username}/shop/apps/api/`, { headers: { authorization: `Bearer ${user.token}` } });
    expect(byPath.status).toBe(200);
    expect(await byPath.text()).toBe(`hello from ${user.username}/shop, visit 42\n`);

    // by subdomain, shared with anyone for the test (the template allows owner only: raise it in the version's spec)
    const { template_version_id: versionId } = await server.store.db.selectFrom('workspaces').select('template_version_id').where('name', '=', 'shop').executeTakeFirstOrThrow();
    const row = await server.store.db.selectFrom('template_versions').select('spec_json').where('id', '=', versionId).executeTakeFirstOrThrow();
    const spec = JSON.parse(row.spec_json);
    spec.workspace.maxShare = 'public';
    await server.store.db.updateTable('template_versions').set({ spec_json: JSON.stringify(spec) }).where('id', '=', versionId).execute();
    expect((await client.put(`/api/v1/workspaces/${user.username}/shop/shares/api`, { level: 'public' })).status).toBe(200);
    const bySubdomain = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const sent = httpRequest({ host: '127.0.0.1', port: new URL(server.url!).port, path: '/', headers: { host: new URL(preview.url).host } }, (response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (body += chunk));
        response.on('end', () => resolve({ status: response.statusCode!, body }));
      });
      sent.on('error', reject);
      sent.end();
    });
    expect(bySubdomain).toEqual({ status: 200, body: `hello from ${user.username}/shop, visit 43\n` });

    // its containers go with it
    expect((await client.delete(`/api/v1/workspaces/${user.username}/shop`)).status).toBe(202);
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while ((await client.get(`/api/v1/workspaces/${user.username}/shop`)).status !== 404 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 250));
  });
});
