import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ServicePlan, StartContext, WorkspacePlan } from '../driver.ts';
import { createProcessDriver } from './driver.ts';
import { workspacePaths } from './state.ts';

/**
 * The process runtime creates a service's workdir on the host with den's own rights, so it
 * checks the path itself: plans stored before push-time path checks existed may still name
 * anything, and workspace code controls what is in its home.
 */
describe('process driver service workdir', () => {
  let dataDir: string;
  let outside: string;
  const workspace = { id: 'ws-workdir', name: 'demo', ownerId: 'u', ownerName: 'alice' };
  const context: StartContext = { log: () => {}, signal: new AbortController().signal, secret: async () => 'unused' };
  const driver = () => createProcessDriver({ dataDir, log: pino({ level: 'silent' }), requireSandbox: false, sandbox: false, stopGraceMs: 1_000 });

  beforeEach(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'den-workdir-'));
    outside = mkdtempSync(join(tmpdir(), 'den-outside-'));
  });
  afterEach(async () => {
    await driver().delete(workspace, context);
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(outside, { recursive: true, force: true });
  });

  const plan = (workdir: string): WorkspacePlan => {
    const service: ServicePlan = {
      name: 'web', env: {}, volumes: [], dependsOn: [], ports: [], workdir,
      command: ['node', '-e', 'setInterval(() => {}, 1000)'],
    };
    return { workspace, image: '', resources: {}, home: {}, env: {}, agent: { name: 'main', url: 'http://127.0.0.1:9', revision: 'r1', delivery: { kind: 'path' } }, secrets: [{ name: 'agent-token', env: 'DEN_AGENT_TOKEN', agent: 'main' }], services: [service] };
  };

  it('refuses a workdir whose .. segments climb out of the home, and creates nothing outside it', async () => {
    const target = join(outside, 'escaped');
    const workdir = `~/${'../'.repeat(20)}${target.slice(1)}`;
    await expect(driver().start(plan(workdir), context)).rejects.toMatchObject({ code: 'TEMPLATE_PATH_INVALID' });
    expect(existsSync(target)).toBe(false);
  });

  it('refuses a workdir under a symlink the workspace made to a place outside its home', async () => {
    const home = workspacePaths(dataDir, workspace.id).home;
    mkdirSync(home, { recursive: true });
    symlinkSync(outside, join(home, 'app'));
    await expect(driver().start(plan('~/app/sub'), context)).rejects.toMatchObject({ code: 'TEMPLATE_PATH_INVALID' });
    expect(existsSync(join(outside, 'sub'))).toBe(false);
  });

  it('creates ~/app and app inside the home', async () => {
    const home = workspacePaths(dataDir, workspace.id).home;
    await driver().start(plan('~/app/nested'), context);
    expect(existsSync(join(home, 'app', 'nested'))).toBe(true);
    await driver().start(plan('other/../plain'), context);
    expect(existsSync(join(home, 'plain'))).toBe(true);
  });
});
