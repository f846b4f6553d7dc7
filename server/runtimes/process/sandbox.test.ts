import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bwrapArgs, joinArgs, SANDBOX_UID } from './sandbox.ts';

describe('bwrapArgs', () => {
  const runtime = mkdtempSync(join(tmpdir(), 'den-node-'));
  const args = bwrapArgs({
    hostname: 'ws',
    home: '/tmp/den-data/workspaces/1/home',
    tmp: '/tmp/den-data/workspaces/1/tmp',
    readOnly: [runtime],
    mounts: { '/tmp/den-data/process/agent-bundle/abc': '/run/den/agent' },
    hidden: ['/usr/share'],
  });

  it('binds a read-only path under /tmp after the workspace /tmp, so a Node runtime in /tmp stays visible', () => {
    const tmpBind = args.findIndex((arg, i) => arg === '--bind' && args[i + 2] === '/tmp');
    const runtimeBind = args.findIndex((arg, i) => arg === '--ro-bind' && args[i + 1] === runtime);
    expect(tmpBind).toBeGreaterThan(-1);
    expect(runtimeBind).toBeGreaterThan(tmpBind);
  });

  it('hides a path a system directory would show (den\'s checkout under /usr or /opt) behind a tmpfs', () => {
    const hidden = args.findIndex((arg, i) => arg === '--tmpfs' && args[i + 1] === '/usr/share');
    const usr = args.findIndex((arg, i) => arg === '--ro-bind' && args[i + 1] === '/usr');
    expect(hidden).toBeGreaterThan(usr);
  });

  it('runs as the unprivileged workspace user in a user namespace of its own, without capabilities', () => {
    expect(args.slice(0, 6)).toEqual(['/usr/bin/bwrap', '--unshare-user', '--uid', String(SANDBOX_UID), '--gid', String(SANDBOX_UID)]);
    expect(args).toContain('--cap-drop');
    expect(args).not.toContain('--share-net');
  });

  it('joins the holder\'s namespaces as the workspace user when den is root, as den\'s uid otherwise', () => {
    expect(joinArgs({ pid: 42, asRoot: true })).toEqual(['/usr/bin/nsenter', '--user=/proc/42/ns/user', '--net=/proc/42/ns/net', '--setuid=1000', '--setgid=1000', '--']);
    expect(joinArgs({ pid: 42, asRoot: false })).toContain('--preserve-credentials');
  });
});
