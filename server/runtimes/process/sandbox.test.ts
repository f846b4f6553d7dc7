import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bwrapArgs } from './sandbox.ts';

describe('bwrapArgs', () => {
  const checkout = mkdtempSync(join(tmpdir(), 'den-checkout-'));
  const args = bwrapArgs({
    hostname: 'ws',
    home: '/tmp/den-data/workspaces/1/home',
    tmp: '/tmp/den-data/workspaces/1/tmp',
    readOnly: [checkout],
    hidden: [],
  });

  it('binds a read-only path under /tmp after the workspace /tmp, so a checkout in /tmp stays visible', () => {
    const tmpBind = args.findIndex((arg, i) => arg === '--bind' && args[i + 2] === '/tmp');
    const checkoutBind = args.findIndex((arg, i) => arg === '--ro-bind' && args[i + 1] === checkout);
    expect(tmpBind).toBeGreaterThan(-1);
    expect(checkoutBind).toBeGreaterThan(tmpBind);
  });
});
