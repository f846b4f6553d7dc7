import { describe, expect, it } from 'vitest';
import { appUrl } from './apps.ts';
import { appOrigin, parseAppHost } from './subdomain.ts';

describe('parseAppHost', () => {
  it('reads a port, an app, the workspace and its owner from the label', () => {
    expect(parseAppHost('8080--dev--alice.localtest:7080', 'localtest')).toEqual({ host: '8080--dev--alice.localtest:7080', target: { port: 8080 }, workspace: 'dev', owner: 'alice' });
    expect(parseAppHost('WEB--my-ws--ci-bot.Apps.Example.com', 'apps.example.com')).toMatchObject({ target: { app: 'web' }, workspace: 'my-ws', owner: 'ci-bot' });
  });

  it('is undefined for den\'s own host, foreign hosts, nested labels and labels without all three parts', () => {
    for (const host of ['localtest:7080', 'den.localtest', '8080--dev--alice.evil.test', 'x.8080--dev--alice.localtest', '8080--alice.localtest', '--dev--alice.localtest', '8080--dev--.localtest', '99999--dev--alice.localtest', 'a_b--dev--alice.localtest']) {
      expect(parseAppHost(host, 'localtest'), host).toBeUndefined();
    }
    expect(parseAppHost('8080--dev--alice.localtest', undefined)).toBeUndefined();
  });

  it('builds the origin with den\'s scheme and port, and none for a label over 63 characters', () => {
    expect(appOrigin('https://den.example.com', 'apps.example.com', 'alice', 'dev', { port: 5173 })).toBe('https://5173--dev--alice.apps.example.com');
    expect(appOrigin('http://127.0.0.1:7080', 'localtest', 'alice', 'dev', { app: 'web' })).toBe('http://web--dev--alice.localtest:7080');
    expect(appOrigin('http://x', 'localtest', 'a'.repeat(32), 'w'.repeat(30), { port: 1 })).toBeUndefined();
  });
});

describe('appUrl', () => {
  it('is the subdomain URL when den has a wildcard domain and the label fits, else the path on den', () => {
    expect(appUrl({ accessUrl: 'http://127.0.0.1:7080', appsWildcardDomain: 'localtest' }, 'alice', 'dev', { port: 8080 })).toBe('http://8080--dev--alice.localtest:7080/');
    expect(appUrl({ accessUrl: 'http://127.0.0.1:7080' }, 'alice', 'dev', { app: 'web' })).toBe('http://127.0.0.1:7080/@alice/dev/apps/web/');
    expect(appUrl({ accessUrl: 'http://x', appsWildcardDomain: 'localtest' }, 'a'.repeat(32), 'w'.repeat(30), { port: 1 })).toBe(`http://x/@${'a'.repeat(32)}/${'w'.repeat(30)}/ports/1/`);
  });
});
