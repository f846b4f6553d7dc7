import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runDriverContract } from '../driver.contract.ts';
import type { ServicePlan, StartContext, WorkspacePlan } from '../driver.ts';
import { createProcessDriver } from './driver.ts';
import { procStartTime } from './processes.ts';
import { bwrapAvailable, joinArgs } from './sandbox.ts';
import { readState, workspacePaths } from './state.ts';

const silent = pino({ level: 'silent' });

runDriverContract('process', (config) =>
  createProcessDriver({ dataDir: config.dataDir, log: silent, requireSandbox: false, stopGraceMs: 2_000 }));

describe('process driver', () => {
  let dataDir: string;
  const workspace = { id: 'ws-process', name: 'demo', ownerId: 'u', ownerName: 'alice' };
  const context: StartContext = { log: () => {}, signal: new AbortController().signal, secret: async () => 'unused' };
  const driver = () => createProcessDriver({ dataDir, log: silent, requireSandbox: false, stopGraceMs: 1_000 });

  beforeEach(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'den-process-'));
  });
  afterEach(async () => {
    await driver().delete(workspace, context);
    rmSync(dataDir, { recursive: true, force: true });
  });

  function plan(services: ServicePlan[]): WorkspacePlan {
    // The agent dials a closed port and keeps retrying: these tests are about the processes.
    return { workspace, image: '', resources: {}, home: {}, env: { DEN_WORKSPACE_NAME: 'demo' }, agent: { name: 'main', url: 'http://127.0.0.1:9', revision: 'r1', delivery: { kind: 'path' } }, secrets: [{ name: 'agent-token', env: 'DEN_AGENT_TOKEN', agent: 'main' }], services };
  }
  const echoService = (name: string, port: number): ServicePlan => ({
    name, env: {}, volumes: [], dependsOn: [], ports: [{ port, preview: false }],
    command: ['node', '-e', `require('http').createServer((q, s) => s.end('${name}')).listen(Number(process.env.PORT))`],
    readiness: { tcp: port, timeoutMs: 10_000, intervalMs: 50 },
  });

  it('keeps running workspaces when the server goes away, and a new server stops them', async () => {
    const first = driver();
    const endpoints = await first.resolveEndpoints(workspace, [{ service: 'web', ports: [80] }]);
    await first.start(plan([echoService('web', 80)]), context);
    await first.close();

    // A new driver (the next server) knows the workspace from the state file alone.
    const second = driver();
    expect(await second.listWorkspaceIds()).toEqual([workspace.id]);
    expect((await second.status(workspace)).phase).toBe('running');
    const network = readState(workspacePaths(dataDir, workspace.id)).network;
    expect(getInWorkspace(network?.nsPid, endpoints.web[80].port)).toBe('web');
    await second.stop(workspace, context);
    expect((await second.status(workspace)).phase).toBe('stopped');
    // The holder of the workspace's network goes with it.
    expect(readState(workspacePaths(dataDir, workspace.id)).network).toBeUndefined();
    if (network) expect(procStartTime(network.nsPid)).toBeNull();
    else await expect(fetch(`http://127.0.0.1:${endpoints.web[80].port}`)).rejects.toThrow();
  });

  it.skipIf(!bwrapAvailable())('puts a workspace\'s services in a network of their own, where den cannot reach them', async () => {
    const d = driver();
    const endpoints = await d.resolveEndpoints(workspace, [{ service: 'web', ports: [80] }]);
    await d.start(plan([echoService('web', 80)]), context);
    const network = readState(workspacePaths(dataDir, workspace.id)).network!;
    expect(getInWorkspace(network.nsPid, endpoints.web[80].port)).toBe('web');
    await expect(fetch(`http://127.0.0.1:${endpoints.web[80].port}`)).rejects.toThrow();
  });

  it.skipIf(!bwrapAvailable())('creates a service workdir as the workspace user, never through a symlink planted in the home', async () => {
    const d = driver();
    const home = workspacePaths(dataDir, workspace.id).home;
    const outside = mkdtempSync(join(tmpdir(), 'den-outside-'));
    mkdirSync(home, { recursive: true });
    symlinkSync(outside, join(home, 'link')); // as workspace code could have
    await d.resolveEndpoints(workspace, [{ service: 'web', ports: [80] }]);
    // refused before anything is created: the workdir resolves outside the home through the link
    await expect(d.start(plan([{ ...echoService('web', 80), workdir: '~/link/evil' }]), context)).rejects.toMatchObject({ code: 'TEMPLATE_PATH_INVALID' });
    expect(existsSync(join(outside, 'evil'))).toBe(false);
    rmSync(outside, { recursive: true, force: true });

    await d.start(plan([{ ...echoService('web', 80), workdir: '~/app/src' }]), context);
    const state = readState(workspacePaths(dataDir, workspace.id));
    if (state.uid !== undefined) expect(statSync(join(home, 'app', 'src')).uid).toBe(state.uid);
    else expect(existsSync(join(home, 'app', 'src'))).toBe(true);
  });

  it('keeps the assigned service ports across stop and start', async () => {
    const d = driver();
    const before = await d.resolveEndpoints(workspace, [{ service: 'web', ports: [80, 443] }]);
    await d.start(plan([echoService('web', 80)]), context);
    await d.stop(workspace, context);
    const after = await d.resolveEndpoints(workspace, [{ service: 'web', ports: [80, 443] }]);
    expect(after).toEqual(before);
    expect(before.web[80].port).not.toBe(before.web[443].port);
  });

  it('starts services in order and passes PORT and their env', async () => {
    const d = driver();
    const lines: string[] = [];
    await d.resolveEndpoints(workspace, [{ service: 'db', ports: [5432] }, { service: 'api', ports: [3000] }]);
    const api: ServicePlan = { ...echoService('api', 3000), env: { GREETING: 'hi' }, dependsOn: ['db'],
      command: ['node', '-e', `console.log('api sees', process.env.GREETING, process.env.PORT); require('http').createServer((q, s) => s.end()).listen(Number(process.env.PORT))`] };
    await d.start(plan([echoService('db', 5432), api]), { ...context, log: (line) => lines.push(line) });
    const starts = lines.filter((line) => line.startsWith('Starting service'));
    expect(starts.map((line) => line.split(' ')[2])).toEqual(['db', 'api']);
    expect(lines.some((line) => /^\[api\] api sees hi \d+$/.test(line))).toBe(true);
  });

  it.skipIf(!bwrapAvailable())('hides den\'s data dir and other homes from the sandbox', async () => {
    const d = driver();
    writeFileSync(join(dataDir, 'secret.txt'), 'den internals');
    const probe: ServicePlan = {
      name: 'probe', env: {}, volumes: [], dependsOn: [], ports: [],
      command: ['sh', '-c', `if [ -e ${join(dataDir, 'secret.txt')} ]; then echo visible; else echo hidden; fi; echo home=$HOME; touch "$HOME/written"; sleep 600`],
      readiness: { command: ['test', '-e', '/home/den/written'], timeoutMs: 10_000, intervalMs: 50 },
    };
    await d.start(plan([probe]), context);
    const log = readFileSync(join(dataDir, 'workspaces', workspace.id, 'logs', 'probe.log'), 'utf8');
    expect(log).toContain('hidden');
    expect(log).toContain('home=/home/den');
    expect(existsSync(join(dataDir, 'workspaces', workspace.id, 'home', 'written'))).toBe(true);
  });

  it('warns once at creation when bubblewrap is missing, and refuses to run without it when a sandbox is required', async () => {
    const lines: string[] = [];
    const log = pino({ level: 'warn' }, { write: (line: string) => lines.push(line) });
    const unsandboxed = createProcessDriver({ dataDir, log, requireSandbox: false, sandbox: false });
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]).msg).toMatch(/^bubblewrap \(bwrap\) is not installed: workspaces of the process runtime are NOT isolated\./);
    expect(JSON.parse(lines[0]).msg).toContain('DEN_REQUIRE_SANDBOX=true');
    expect(() => createProcessDriver({ dataDir, log, requireSandbox: true, sandbox: false })).toThrow(
      expect.objectContaining({ code: 'RUNTIME_ERROR', message: expect.stringContaining('apt-get install bubblewrap') }));

    // Unsandboxed, the home is the real directory in the data dir.
    const probe: ServicePlan = {
      name: 'probe', env: {}, volumes: [], dependsOn: [], ports: [],
      command: ['sh', '-c', 'echo "home=$HOME"; sleep 600'],
      readiness: { command: ['sh', '-c', `grep -q home= ${join(dataDir, 'workspaces', workspace.id, 'logs', 'probe.log')}`], timeoutMs: 10_000, intervalMs: 50 },
    };
    await unsandboxed.start(plan([probe]), context);
    const log2 = readFileSync(join(dataDir, 'workspaces', workspace.id, 'logs', 'probe.log'), 'utf8');
    expect(log2).toContain(`home=${join(dataDir, 'workspaces', workspace.id, 'home')}`);
    expect(lines).toHaveLength(1);
  });
});

/** GET / on a loopback port from inside a workspace's network (from here when it has none). */
function getInWorkspace(nsPid: number | undefined, port: number): string {
  const fetchOnce = ['-e', `fetch('http://127.0.0.1:${port}/').then((r) => r.text()).then((t) => process.stdout.write(t))`];
  const argv = nsPid === undefined ? [process.execPath, ...fetchOnce]
    : [...joinArgs({ pid: nsPid, asRoot: process.getuid?.() === 0 }), process.execPath, ...fetchOnce];
  return spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' }).stdout;
}
