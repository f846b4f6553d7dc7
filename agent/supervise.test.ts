import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

/** The service supervisor of `afterSync: restart` as a real process tree: agent/main.ts supervise -- sh. */
const WAIT_MS = 10_000;
const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function until<T>(read: () => T | undefined, what: string): Promise<T> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const value = read();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${WAIT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('the service supervisor', () => {
  it('restarts the command on SIGHUP with its whole process group, and ends with the command\'s status', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'den-supervise-'));
    dirs.push(dir);
    const pidFile = join(dir, 'pid');
    const grandchild = join(dir, 'grandchild');
    // the command starts a grandchild too: a restart must not leave it behind
    const script = `echo $$ > ${pidFile}.new && mv ${pidFile}.new ${pidFile}; sleep 300 & echo $! > ${grandchild}; trap 'exit 7' USR1; wait`;
    const supervisor = spawn(process.execPath, [join(import.meta.dirname, 'main.ts'), 'supervise', '--', 'sh', '-c', script], { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => supervisor.on('exit', (code) => resolve(code)));
    const read = (path: string) => (existsSync(path) ? Number(readFileSync(path, 'utf8')) || undefined : undefined);
    const first = await until(() => read(pidFile), 'the first start');
    const firstGrandchild = await until(() => read(grandchild), 'the grandchild');

    supervisor.kill('SIGHUP');
    const second = await until(() => { const pid = read(pidFile); return pid !== first ? pid : undefined; }, 'the restart');
    expect(second).not.toBe(first);
    await until(() => (alive(firstGrandchild) ? undefined : true), 'the old grandchild ending');
    expect(supervisor.exitCode).toBeNull();

    // the command ending by itself ends the supervisor with its status
    process.kill(second!, 'SIGUSR1');
    expect(await exited).toBe(7);
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
