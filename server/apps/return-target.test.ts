import { describe, expect, it } from 'vitest';
import { appAuthorizePath, appReturnTarget } from './return-target.ts';

const config = { accessUrl: 'https://den.example.com', appsWildcardDomain: 'apps.example.com' };
const appHost = '8080--dev--alice.apps.example.com';

describe('appReturnTarget', () => {
  it('keeps den\'s authorize step for an app host of its wildcard domain, as a path on den', () => {
    const path = appAuthorizePath(appHost, '/src/?q=1');
    expect(appReturnTarget(path, config)).toBe(path);
    expect(appReturnTarget(`https://den.example.com${path}`, config)).toBe(path);
    // the way on from the app host stays a path on that host
    expect(appReturnTarget(`/api/v1/apps/authorize?host=${appHost}&next=//evil.example`, config)).toBe(appAuthorizePath(appHost, '/'));
  });

  it('keeps a path-mode app or port URL on den\'s origin', () => {
    expect(appReturnTarget('/@alice/dev/apps/web/', config)).toBe('/@alice/dev/apps/web/');
    expect(appReturnTarget('/@alice/dev/ports/5173/src/main.ts?t=1', config)).toBe('/@alice/dev/ports/5173/src/main.ts?t=1');
  });

  it.each([
    ['a foreign host', 'https://evil.example/api/v1/apps/authorize?host=8080--dev--alice.apps.example.com'],
    ['a scheme-relative address', '//evil.example/'],
    ['a backslash read as //', '/\\evil.example/'],
    ['javascript:', 'javascript:alert(document.cookie)'],
    ['another den origin\'s authorize path', `https://other-den.example.com${appAuthorizePath(appHost, '/')}`],
    ['den\'s own origin on another scheme', `http://den.example.com${appAuthorizePath(appHost, '/')}`],
    ['credentials in the address', `https://user:pw@den.example.com${appAuthorizePath(appHost, '/')}`],
    ['an authorize step for a host outside the wildcard domain', appAuthorizePath('evil.example', '/')],
    ['an authorize step for den\'s own host', appAuthorizePath('den.example.com', '/')],
    ['an authorize step without a host', '/api/v1/apps/authorize?next=/'],
    ['a dashboard page', '/workspaces'],
    ['another API path', '/api/v1/auth/logout'],
    ['a path-mode look-alike', '/@alice/dev/terminal'],
    ['nothing', ''],
    ['not a string', 42],
  ])('refuses %s', (_name, next) => {
    expect(appReturnTarget(next, config)).toBeUndefined();
  });

  it('refuses every authorize step when den has no wildcard domain', () => {
    expect(appReturnTarget(appAuthorizePath(appHost, '/'), { accessUrl: config.accessUrl, appsWildcardDomain: undefined })).toBeUndefined();
  });
});
