import { Duplex, PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TaskSpec } from '../../protocol/template.ts';
import { storeDialects } from '../../test/support/postgres.ts';
import { openTestStore } from '../../test/support/test-store.ts';
import { seedWorkspace, type SeededWorkspace } from '../../test/support/workspace-seed.ts';
import type { AgentHub, ExecRequest, ExecSession } from '../agents/hub-types.ts';
import type { Store } from '../store/connect.ts';
import { systemClock } from '../store/time.ts';
import { grantEnvironment, hasGrant, listGrants, revokeEnvironment } from './grants.ts';
import type { OneOffRequest } from '../runtimes/driver.ts';
import { KEEP_RUNS, lastPassedRun, listRuns, LogTail, RUN_LOG_CAP_BYTES, runEntry, type RunDeps } from './runs.ts';

/**
 * Runs and grants in the store, on SQLite and PostgreSQL. The agent is faked at den's own seam
 * (AgentHub.exec): a scripted command that writes output and exits, or never exits.
 */
type Script = { stdout?: string; stderr?: string; exit?: number; hang?: boolean };

function scriptedAgents(script: Script, seen: ExecRequest[] = []): Pick<AgentHub, 'exec'> {
  return {
    async exec(_agent, request) {
      seen.push(request);
      const stdout = new PassThrough();
      const stderr = new PassThrough();
      let resolveExit!: (code: number) => void;
      const exit = new Promise<number>((resolve) => { resolveExit = resolve; });
      const stdio = Duplex.from({ readable: stdout, writable: new PassThrough() });
      const session: ExecSession = {
        stdio, stderr, exit, signal: undefined, resize() {},
        closeStdin() {},
        kill() {
          stdout.end();
          stderr.end();
          resolveExit(137);
        },
      };
      setImmediate(() => {
        if (script.stdout) stdout.write(script.stdout);
        if (script.stderr) stderr.write(script.stderr);
        if (script.hang) return;
        stdout.end();
        stderr.end();
        resolveExit(script.exit ?? 0);
      });
      return session;
    },
  };
}

const task = (extra: Partial<TaskSpec> = {}): TaskSpec => ({ service: 'api', run: 'echo hi', timeout: '10m', ...extra });

describe.each(storeDialects)('environment runs and grants on %s', (dialect) => {
  let store: Store;
  let close: () => Promise<void>;
  let seeded: SeededWorkspace;

  beforeAll(async () => {
    ({ store, close } = await openTestStore(dialect));
    seeded = await seedWorkspace(store.db, { username: 'runner', workspaceName: 'ws' });
  });
  afterAll(async () => {
    await close?.();
  });

  const deps = (script: Script, seen?: ExecRequest[]) => ({ db: store.db, clock: systemClock, agents: scriptedAgents(script, seen) });

  it('records a passed run with its output, runs `sh -c RUN` in the service\'s agent, and finds it as the version\'s passed run', async () => {
    const seen: ExecRequest[] = [];
    const lines: string[] = [];
    const run = await runEntry(deps({ stdout: 'one\ntwo\n', stderr: 'warn\n' }, seen), seeded.workspaceId, { kind: 'task', name: 'seed', spec: task(), version: 'v1' }, {
      trigger: 'user', userId: seeded.userId, onLine: (stream, line) => lines.push(`${stream}:${line}`),
    });
    expect(seen[0].command).toEqual(['sh', '-c', 'echo hi']);
    expect(run).toMatchObject({ state: 'passed', exit_code: 0, version: 'v1', trigger: 'user' });
    expect(run.log).toContain('one\ntwo\n');
    expect(lines).toEqual(expect.arrayContaining(['stdout:one', 'stdout:two', 'stderr:warn']));
    expect((await lastPassedRun(store.db, seeded.workspaceId, 'task', 'seed', 'v1'))?.id).toBe(run.id);
    expect(await lastPassedRun(store.db, seeded.workspaceId, 'task', 'seed', 'v2')).toBeUndefined();
  });

  it('records a failure with the exit status, and never as a passed run of its version', async () => {
    const run = await runEntry(deps({ stderr: 'boom\n', exit: 3 }), seeded.workspaceId, { kind: 'test', name: 'e2e', spec: task(), version: 'v9' }, { trigger: 'user' });
    expect(run).toMatchObject({ state: 'failed', exit_code: 3 });
    expect(await lastPassedRun(store.db, seeded.workspaceId, 'test', 'e2e', 'v9')).toBeUndefined();
  });

  it('ends a command that outlives its timeout and says so in the log', async () => {
    const run = await runEntry(deps({ stdout: 'started\n', hang: true }), seeded.workspaceId, { kind: 'task', name: 'slow', spec: task({ timeout: '200ms' }), version: 'v1' }, { trigger: 'build' });
    expect(run).toMatchObject({ state: 'failed', exit_code: null });
    expect(run.log).toContain('den ended the task after its timeout of 200ms.');
  });

  it('records a run whose client went away as cancelled, not as a failure of the command', async () => {
    const abort = new AbortController();
    const lines: string[] = [];
    const running = runEntry(deps({ stdout: 'waiting\n', hang: true }), seeded.workspaceId, { kind: 'test', name: 'wait', spec: task(), version: 'v1' }, {
      trigger: 'user', signal: abort.signal, onLine: (_stream, line) => { lines.push(line); if (line === 'waiting') abort.abort(); },
    });
    const run = await running;
    expect(run).toMatchObject({ state: 'cancelled', exit_code: null });
    expect(run.log).toContain('den ended the test: the request that ran it went away.');
    expect(await lastPassedRun(store.db, seeded.workspaceId, 'test', 'wait', 'v1')).toBeUndefined();
  });

  it('runs a one-off entry through the driver (not the agent) with its service, command and time limit, keeping its output and status', async () => {
    const requests: OneOffRequest[] = [];
    const seen: ExecRequest[] = [];
    const driver: RunDeps['driver'] = {
      name: 'docker',
      async runOneOff(workspace, request) {
        expect(workspace).toMatchObject({ id: seeded.workspaceId, ownerId: seeded.userId });
        requests.push(request);
        request.onOutput('stdout', 'pong from db\nhalf a ');
        request.onOutput('stdout', 'line\n');
        request.onOutput('stderr', 'oops\n');
        return { exitCode: 3, timedOut: false };
      },
    };
    const lines: string[] = [];
    const run = await runEntry({ ...deps({}, seen), driver }, seeded.workspaceId, { kind: 'task', name: 'reach', spec: task({ oneOff: true, timeout: '90s' }), version: 'v1' }, {
      trigger: 'user', onLine: (stream, line) => lines.push(`${stream}:${line}`),
    });
    expect(seen).toEqual([]);
    expect(requests).toMatchObject([{ service: 'api', command: ['sh', '-c', 'echo hi'], timeoutMs: 90_000 }]);
    expect(lines).toEqual(['stdout:pong from db', 'stdout:half a line', 'stderr:oops']);
    expect(run).toMatchObject({ state: 'failed', exit_code: 3 });

    const timedOut = await runEntry({ ...deps({}), driver: { name: 'docker', runOneOff: async () => ({ exitCode: undefined, timedOut: true }) } }, seeded.workspaceId,
      { kind: 'test', name: 'hang', spec: task({ oneOff: true, timeout: '3s' }), version: 'v1' }, { trigger: 'user' });
    expect(timedOut).toMatchObject({ state: 'failed', exit_code: null });
    expect(timedOut.log).toContain('den ended the test after its timeout of 3s and removed its one-off container.');
  });

  it('refuses a one-off entry on a runtime without one-off runs with a coded sentence, and records the failure', async () => {
    const entry = { kind: 'test' as const, name: 'e2e-one-off', spec: task({ oneOff: true }), version: 'v1' };
    await expect(runEntry({ ...deps({}), driver: { name: 'process' } }, seeded.workspaceId, entry, { trigger: 'user' }))
      .rejects.toMatchObject({ code: 'RUNTIME_CAPABILITY_MISSING', message: expect.stringContaining('which the process runtime cannot start') });
    const [recorded] = await listRuns(store.db, seeded.workspaceId, { kind: 'test', name: 'e2e-one-off', limit: 1 });
    expect(recorded).toMatchObject({ state: 'failed' });
  });

  it('keeps the last 64 KiB of a run\'s output and counts what it dropped', async () => {
    const big = `${'x'.repeat(1023)}\n`.repeat(100); // 100 KiB
    const run = await runEntry(deps({ stdout: big }), seeded.workspaceId, { kind: 'task', name: 'loud', spec: task(), version: 'v1' }, { trigger: 'user' });
    expect(Buffer.byteLength(run.log)).toBeLessThanOrEqual(RUN_LOG_CAP_BYTES);
    expect(run.log_dropped_bytes + Buffer.byteLength(run.log)).toBe(Buffer.byteLength(big));
  });

  it(`keeps a workspace's newest ${KEEP_RUNS} runs`, async () => {
    const other = await seedWorkspace(store.db, { username: 'many', workspaceName: 'ws' });
    const start = Date.now();
    let tick = 0;
    // distinct start times, so "newest" is well defined
    const clock = { now: () => new Date(start + tick++ * 1000) };
    for (let i = 0; i < KEEP_RUNS + 5; i++) {
      await runEntry({ db: store.db, clock, agents: scriptedAgents({}) }, other.workspaceId, { kind: 'test', name: `t${i}`, spec: task(), version: 'v' }, { trigger: 'user' });
    }
    const runs = await listRuns(store.db, other.workspaceId, { limit: 200 });
    expect(runs).toHaveLength(KEEP_RUNS);
    expect(runs[0].name).toBe(`t${KEEP_RUNS + 4}`);
    expect(runs.some((run) => run.name === 't0')).toBe(false);
  });

  it('grants and revokes a teammate, refuses the owner, and records each among the workspace\'s events', async () => {
    const mate = await seedWorkspace(store.db, { username: 'mate', workspaceName: 'own' });
    const workspace = { ...(await store.db.selectFrom('workspaces').selectAll().where('id', '=', seeded.workspaceId).executeTakeFirstOrThrow()), owner_name: 'runner' };
    await expect(grantEnvironment(store.db, systemClock, workspace, 'runner', 'runner')).rejects.toMatchObject({ code: 'GRANT_NOT_ALLOWED' });
    await expect(grantEnvironment(store.db, systemClock, workspace, 'nobody', 'runner')).rejects.toMatchObject({ code: 'USER_NOT_FOUND' });
    await grantEnvironment(store.db, systemClock, workspace, 'mate', 'runner');
    await grantEnvironment(store.db, systemClock, workspace, 'mate', 'runner'); // twice: one grant
    expect(await listGrants(store.db, seeded.workspaceId)).toEqual([expect.objectContaining({ user: 'mate', grantedBy: 'runner' })]);
    expect(await hasGrant(store.db, seeded.workspaceId, mate.userId)).toBe(true);
    await revokeEnvironment(store.db, systemClock, workspace, 'mate', 'runner');
    expect(await hasGrant(store.db, seeded.workspaceId, mate.userId)).toBe(false);
    await expect(revokeEnvironment(store.db, systemClock, workspace, 'mate', 'runner')).rejects.toMatchObject({ code: 'GRANT_NOT_FOUND' });
    const kinds = (await store.db.selectFrom('workspace_events').select('kind').where('workspace_id', '=', seeded.workspaceId).execute()).map((row) => row.kind);
    expect(kinds.filter((kind) => kind === 'environment.grant')).toHaveLength(2);
    expect(kinds).toContain('environment.revoke');
  });
});

describe('LogTail', () => {
  it('keeps the end of one chunk larger than the cap', () => {
    const tail = new LogTail(10);
    tail.append('abcdefghijklmnop');
    expect(tail.text()).toBe('ghijklmnop');
    expect(tail.dropped).toBe(6);
  });
});
