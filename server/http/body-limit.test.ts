import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../../test/support/harness.ts';
import { api, createUserWithToken, setupOwner, type Api } from '../../test/support/users.ts';
import { DEFAULT_BODY_LIMIT } from './app.ts';

describe('request body limits', () => {
  let server: TestServer;
  let admin: Api;
  const big = 'x'.repeat(DEFAULT_BODY_LIMIT + 1024);

  beforeAll(async () => {
    server = await startTestServer({ startWorkers: false, config: { maxTemplateBytes: 4 * 1024 * 1024 } });
    const owner = await setupOwner(server.app);
    admin = api(server.app, (await createUserWithToken(server.app, owner.token, 'template-admin')).token);
  });
  afterAll(async () => server?.close());

  it('refuses an anonymous body over the default limit with 413 before any route reads it', async () => {
    const response = await api(server.app).post('/api/v1/auth/login', { username: 'nobody', password: big });
    expect(response.status).toBe(413);
    expect(response.json.error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('takes a template push up to maxTemplateBytes', async () => {
    const files = { 'template.yaml': 'name: big-files\nworkspace:\n  image: x\n', 'data.txt': big };
    const response = await admin.post('/api/v1/templates', { files });
    expect(response.status).toBe(201);
  });
});
