import { describe, expect, it } from 'vitest';
import { parseForwardSpec } from './commands/port-forward.ts';
import { BLOCK_END, BLOCK_START, quote, renderSshConfigBlock, replaceSshConfigBlock, sshAlias } from './ssh-config.ts';

const options = { denCommand: '/usr/bin/node /opt/den/bin/den.js', knownHostsFile: '/home/a/.config/den/known_hosts', hostKeyAlias: 'den-example' };

describe('den config-ssh block', () => {
  const block = renderSshConfigBlock([{ alias: 'den.dev', workspace: 'alice/dev' }, { alias: 'den.api.bob', workspace: 'bob/api' }], options);

  it('renders one Host entry per workspace between the markers, through den ssh --stdio', () => {
    expect(block.startsWith(`${BLOCK_START}\n`)).toBe(true);
    expect(block.endsWith(`${BLOCK_END}\n`)).toBe(true);
    expect(block).toContain('Host den.dev\n  HostName den.dev\n  User dev\n  ProxyCommand /usr/bin/node /opt/den/bin/den.js ssh --stdio alice/dev\n');
    expect(block).toContain('Host den.api.bob\n');
    expect(block).toContain('  HostKeyAlias den-example\n  UserKnownHostsFile /home/a/.config/den/known_hosts\n  StrictHostKeyChecking yes\n');
  });

  it('appends to a file without a block and replaces the block in place, leaving every other line alone', () => {
    expect(replaceSshConfigBlock('', block)).toBe(block);
    const appended = replaceSshConfigBlock('Host a\n  User x\n', block);
    expect(appended).toBe(`Host a\n  User x\n\n${block}`);
    expect(replaceSshConfigBlock('Host a', block)).toBe(`Host a\n\n${block}`);
    const around = `Host a\n${block}Host b\n  Port 2\n`;
    const smaller = renderSshConfigBlock([], options);
    expect(replaceSshConfigBlock(around, smaller)).toBe(`Host a\n${smaller}Host b\n  Port 2\n`);
    // idempotent: the same block twice changes nothing
    expect(replaceSshConfigBlock(appended, block)).toBe(appended);
  });

  it('refuses a damaged block (a start without its end, or two starts) instead of guessing', () => {
    expect(() => replaceSshConfigBlock(`${BLOCK_START}\nHost x\n`, block)).toThrow(/damaged/);
    expect(() => replaceSshConfigBlock(`${BLOCK_START}\n${BLOCK_START}\n${BLOCK_END}\n`, block)).toThrow(/damaged/);
    expect(() => replaceSshConfigBlock(`${BLOCK_END}\n${BLOCK_START}\n`, block)).toThrow(/damaged/);
  });

  it('names aliases den.NAME for the caller and den.NAME.OWNER for others, and quotes paths with spaces', () => {
    expect(sshAlias('alice', 'dev', 'alice')).toBe('den.dev');
    expect(sshAlias('bob', 'dev', 'alice')).toBe('den.dev.bob');
    expect(quote('/usr/bin/node')).toBe('/usr/bin/node');
    expect(quote('/Users/A B/den.js')).toBe('"/Users/A B/den.js"');
  });
});

describe('den port-forward specs', () => {
  it('reads LOCAL:REMOTE, PORT and LOCAL:/socket', () => {
    expect(parseForwardSpec('8080:3000')).toEqual({ localPort: 8080, remote: { port: 3000 } });
    expect(parseForwardSpec('5432')).toEqual({ localPort: 5432, remote: { port: 5432 } });
    expect(parseForwardSpec('9000:/run/app.sock')).toEqual({ localPort: 9000, remote: { path: '/run/app.sock' } });
  });

  it('refuses anything else with a usage sentence', () => {
    for (const bad of ['', 'x', '0:1', '70000', '80:abc', '80:']) expect(() => parseForwardSpec(bad)).toThrow(/is not a forward/);
  });
});
