import { createServer } from 'node:net';
import { describe, expect, test } from 'vitest';
import { DenApiError, errorFromResponse } from './errors.ts';
import { Transport } from './http.ts';

describe('errorFromResponse', () => {
  test('carries the code, status, sentence and validations of den\'s error envelope', () => {
    const body = JSON.stringify({
      error: { code: 'TEMPLATE_INVALID', message: 'The template is invalid. Fix it.', validations: [{ field: 'workspace.image', detail: 'is required', line: 3 }] },
    });
    const error = errorFromResponse(400, 'Bad Request', body, 'http://den.test/api/v1/templates');
    expect(error).toBeInstanceOf(DenApiError);
    expect(error).toMatchObject({ code: 'TEMPLATE_INVALID', status: 400, message: 'The template is invalid. Fix it.' });
    expect(error.validations).toEqual([{ field: 'workspace.image', detail: 'is required', line: 3 }]);
  });

  test('explains a response that is not den\'s (a proxy page) in a sentence', () => {
    const error = errorFromResponse(502, 'Bad Gateway', '<html>oops</html>', 'http://den.test/api/v1/workspaces');
    expect(error.code).toBe('BAD_RESPONSE');
    expect(error.message).toBe('The server at http://den.test answered 502 Bad Gateway without a den error. Check that the URL points at a den server.');
  });
});

describe('Transport network errors', () => {
  test('turn a refused connection into one sentence naming the URL', async () => {
    // A port that was just free: nothing listens on it.
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port: free } = probe.address() as { port: number };
        probe.close(() => resolve(free));
      });
    });
    const transport = new Transport({ url: `http://127.0.0.1:${port}` });
    await expect(transport.request('GET', '/api/v1/setup')).rejects.toMatchObject({
      code: 'NETWORK',
      status: 0,
      message: `Cannot reach den at http://127.0.0.1:${port}: ECONNREFUSED. Is the server running?`,
    });
  });
});
