import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from '../test/support/harness.ts';

describe('the composition root', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ startWorkers: false });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('decorates nothing on the HTTP app: the domains get their parts as plugin options', () => {
    expect(server.app.hasDecorator('den')).toBe(false);
  });

  it('serves at /metrics the metrics of the Den the app was built over', async () => {
    server.den.metrics.loginsRefused.inc({ reason: 'busy' });
    const response = await server.app.inject({ method: 'GET', url: '/metrics' });
    expect(response.statusCode).toBe(200);
    expect(response.body).toContain('den_login_refused_total{reason="busy"} 1');
  });
});
