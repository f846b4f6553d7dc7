import { chmodSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ensureOwnedBy, ensureTraversable } from './ownership.ts';

const asRoot = process.getuid?.() === 0;
const WORKSPACE_UID = 1_900_000_123;

describe('workspace ownership', () => {
  const dirs: string[] = [];
  const scratch = () => {
    const dir = mkdtempSync(join(tmpdir(), 'den-owner-'));
    dirs.push(dir);
    return dir;
  };
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('lets others pass through the data dir without listing it, and refuses a data dir under a closed parent', () => {
    const root = scratch();
    chmodSync(root, 0o755);
    const dataDir = join(root, 'data');
    mkdirSync(join(dataDir, 'workspaces'), { recursive: true, mode: 0o700 });
    chmodSync(dataDir, 0o700);
    ensureTraversable(dataDir, [join(dataDir, 'workspaces')]);
    expect(statSync(dataDir).mode & 0o777).toBe(0o701);
    expect(statSync(join(dataDir, 'workspaces')).mode & 0o777).toBe(0o701);

    chmodSync(root, 0o700);
    expect(() => ensureTraversable(dataDir, [])).toThrow(expect.objectContaining({
      code: 'RUNTIME_ERROR', message: expect.stringContaining(`chmod o+x ${root}`),
    }));
  });

  it.skipIf(!asRoot)('gives a home to the workspace uid, changing symlinks themselves and never what they point at', () => {
    const home = scratch();
    const outside = scratch();
    writeFileSync(join(outside, 'host-file'), 'not yours');
    mkdirSync(join(home, 'project'));
    writeFileSync(join(home, 'project', 'a.txt'), 'a');
    symlinkSync(outside, join(home, 'link'));
    ensureOwnedBy(home, WORKSPACE_UID);
    for (const path of [home, join(home, 'project'), join(home, 'project', 'a.txt'), join(home, 'link')]) {
      expect(lstatSync(path).uid, path).toBe(WORKSPACE_UID);
    }
    expect(statSync(outside).uid).toBe(0);
    expect(statSync(join(outside, 'host-file')).uid).toBe(0);
  });
});
