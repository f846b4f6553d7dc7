import { describe, expect, it } from 'vitest';
import { downstreamResponseHeaders, upstreamRequestHeaders } from './forward-headers.ts';

const context = {
  port: 5173, strippedCookies: ['den_session'], denAuthorization: true, publicOrigin: 'https://den.example.com', publicHost: 'den.example.com',
  publicProto: 'https' as const, prefix: '/@a/ws/ports/5173', clientIp: '10.0.0.9', trustForwarded: false, upgrade: false,
};

describe('upstreamRequestHeaders', () => {
  it('drops hop-by-hop headers, including those Connection names, and den\'s credentials', () => {
    const out = upstreamRequestHeaders({ connection: 'keep-alive, x-secret', 'x-secret': '1', 'keep-alive': 'timeout=5', te: 'trailers', authorization: 'Bearer den_x', 'x-csrf-token': 't', cookie: 'den_session=s', accept: '*/*' }, context);
    expect(out).toEqual({
      accept: '*/*', host: 'localhost:5173', 'x-forwarded-for': '10.0.0.9', 'x-forwarded-host': 'den.example.com', 'x-forwarded-proto': 'https', 'x-forwarded-prefix': '/@a/ws/ports/5173',
    });
  });

  it('rewrites den\'s own Origin to the app\'s and passes a foreign one as it is', () => {
    expect(upstreamRequestHeaders({ origin: 'https://den.example.com' }, context).origin).toBe('http://localhost:5173');
    expect(upstreamRequestHeaders({ origin: 'https://evil.example' }, context).origin).toBe('https://evil.example');
  });
});

describe('downstreamResponseHeaders', () => {
  it('keeps repeated Set-Cookie headers but none that would set one of den\'s cookies', () => {
    expect(downstreamResponseHeaders(['Set-Cookie', 'a=1', 'Transfer-Encoding', 'chunked', 'set-cookie', 'den_session=evil; Path=/', 'Set-Cookie', 'den_app=x', 'Set-Cookie', 'b=2', 'X-App', 'y'])).toEqual(['Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'X-App', 'y']);
  });
});
