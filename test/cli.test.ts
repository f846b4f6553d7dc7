import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { bwrapAvailable } from '../server/runtimes/process/sandbox.ts';
import { startTestServer, type TestServer } from './support/harness.ts';

/**
 * The `den` CLI end to end: the real `node bin/den.js` in child processes, with their own
 * XDG_CONFIG_HOME, against a real listening server. The main sequence is the one in the
 * README (and issue 2), run line by line through `sh -c` exactly as a user types it.
 */

const ROOT = resolve(import.meta.dirname, '..');
const PASSWORD = 'first-user-password';
/** One CLI command, including a build it waits for on the process runtime. */
const COMMAND_TIMEOUT_MS = 60_000;
/** what the reconciler promises for noticing a dead agent (a bound to wait for, not a measured time) */
const DOWN_TIMEOUT_MS = 10_000;

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

let server: TestServer;
let url: string;
let work: string;
let configHome: string;
let binDir: string;

beforeAll(async () => {
  server = await startTestServer({ listen: true });
  url = server.url!;
  work = mkdtempSync(join(tmpdir(), 'den-cli-test-'));
  configHome = join(work, 'config');
  // `den` on PATH, so the README's lines run verbatim.
  binDir = join(work, 'bin');
  mkdirSync(binDir);
  symlinkSync(join(ROOT, 'bin', 'den.js'), join(binDir, 'den'));
});

afterAll(async () => {
  await server?.close();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Runs a shell line with `den` on PATH, in the repository root (templates/starter is relative to it). */
function sh(line: string, options: { input?: string; env?: Record<string, string>; configHome?: string } = {}): Promise<Result> {
  return run('sh', ['-c', line], options);
}

/** Runs `node bin/den.js ...args`. */
function den(args: string[], options: { input?: string; env?: Record<string, string>; configHome?: string } = {}): Promise<Result> {
  return run(process.execPath, [join(ROOT, 'bin', 'den.js'), ...args], options);
}

function run(command: string, args: string[], options: { input?: string; env?: Record<string, string>; configHome?: string }): Promise<Result> {
  const env: Record<string, string> = {
    PATH: `${binDir}:${process.env.PATH}`,
    HOME: work,
    XDG_CONFIG_HOME: options.configHome ?? configHome,
    ...options.env,
  };
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`\`${args.join(' ')}\` did not finish within ${COMMAND_TIMEOUT_MS} ms.\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, COMMAND_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

/** A port nothing listens on (it was free a moment ago). */
function freePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolvePort(port));
    });
  });
}

/** A failed command's output in the assertion message, so a red test says why. */
function explain(result: Result): string {
  return `exit ${result.code}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`;
}

/** stderr holds a full sentence: `den: ` then text ending in a period (or a question mark). */
function expectSentence(stderr: string, pattern: RegExp): void {
  expect(stderr).toMatch(/^den: \S.*[.?]$/m);
  expect(stderr).toMatch(pattern);
}

describe('den CLI against a real server', { timeout: 5 * COMMAND_TIMEOUT_MS }, () => {
  test('refuses commands before login with a sentence and exit 1', async () => {
    const result = await den(['list']);
    expect(result.code, explain(result)).toBe(1);
    expectSentence(result.stderr, /not logged in.*den login/);
  });

  test('explains an unreachable server in one sentence', async () => {
    const port = await freePort();
    const result = await den(['whoami'], { env: { DEN_URL: `http://127.0.0.1:${port}`, DEN_TOKEN: 'den_nothing' } });
    expect(result.code, explain(result)).toBe(1);
    expect(result.stderr).toBe(`den: Cannot reach den at http://127.0.0.1:${port}: ECONNREFUSED. Is the server running?\n`);
  });

  test('logs in by creating the first user, saving the token in a 0600 config file', async () => {
    const result = await sh(`den login ${url} --first-user-username admin --first-user-password '${PASSWORD}'`);
    expect(result.code, explain(result)).toBe(0);
    expect(result.stdout).toContain(`Logged in to ${url} as admin.`);
    const configFile = join(configHome, 'den', 'config.json');
    expect(statSync(configFile).mode & 0o777).toBe(0o600);

    const whoami = await den(['whoami', '--json']);
    expect(whoami.code, explain(whoami)).toBe(0);
    expect(JSON.parse(whoami.stdout)).toMatchObject({ username: 'admin', role: 'owner', url });
  });

  test('signs in again with the same first-user line once the server is set up', async () => {
    const other = join(work, 'config-rerun');
    const result = await den(['login', url, '--first-user-username', 'admin', '--first-user-password', PASSWORD], { configHome: other });
    expect(result.code, explain(result)).toBe(0);
    expect(result.stderr).not.toContain('Created the first user');
  });

  test('rejects a wrong password with the server\'s sentence and exit 1', async () => {
    const result = await den(['login', url, '--username', 'admin', '--password', 'not-the-password'], { configHome: join(work, 'config-wrong') });
    expect(result.code, explain(result)).toBe(1);
    expectSentence(result.stderr, /password/i);
  });

  test('pushes and activates the starter template', async () => {
    const result = await sh('den templates push templates/starter --activate');
    expect(result.code, explain(result)).toBe(0);
    const list = await den(['templates', 'list', '--json']);
    expect(list.code, explain(list)).toBe(0);
    expect(JSON.stringify(JSON.parse(list.stdout))).toContain('"starter"');
  });

  test('creates a workspace, streaming its build log until it runs', async () => {
    const result = await sh('den create demo --template starter --param greeting=hi --wait');
    expect(result.code, explain(result)).toBe(0);
    expect(result.stderr).toMatch(/==> \w+/);
    expect(result.stdout).toMatch(/succeeded.*admin\/demo is running\./);
  });

  test('follows a finished build\'s log to its end and exits 0', async () => {
    const result = await den(['logs', 'demo', '-f']);
    expect(result.code, explain(result)).toBe(0);
    expect(result.stdout).toMatch(/<== agent succeeded in \d+ ms/);
  });

  test('shows, lists versions of, pulls and describes the schema of a template', async () => {
    const versions = await den(['templates', 'versions', 'starter']);
    expect(versions.code, explain(versions)).toBe(0);
    expect(versions.stdout).toMatch(/^VERSION\s+ACTIVE/);
    expect(versions.stdout).toMatch(/^\s*1\s+active/m);

    const shown = await den(['templates', 'show', 'starter']);
    expect(shown.code, explain(shown)).toBe(0);
    expect(shown.stdout).toMatch(/^greeting\s+string\s+"hello"/m);

    const target = join(work, 'pulled');
    const pulled = await den(['templates', 'pull', 'starter', target]);
    expect(pulled.code, explain(pulled)).toBe(0);
    expect(readFileSync(join(target, 'template.yaml'), 'utf8')).toBe(readFileSync(join(ROOT, 'templates', 'starter', 'template.yaml'), 'utf8'));
    const again = await den(['templates', 'pull', 'starter', target]);
    expect(again.code, explain(again)).toBe(2);
    expectSentence(again.stderr, /already exists.*--force/);

    const schema = await den(['templates', 'schema']);
    expect(schema.code, explain(schema)).toBe(0);
    expect(JSON.parse(schema.stdout)).toHaveProperty('properties.workspace');
  });

  test('prints each problem of an invalid template with its field and line', async () => {
    const dir = join(work, 'broken-template');
    mkdirSync(dir);
    writeFileSync(join(dir, 'template.yaml'), 'name: broken\nworkspace:\n  image: den/base:bookworm\n  colour: blue\n');
    const result = await den(['templates', 'push', dir]);
    expect(result.code, explain(result)).toBe(1);
    expect(result.stderr).toMatch(/^den: .+\.$/m);
    expect(result.stderr).toMatch(/^ {2}workspace(\.colour)?: .+ \(line 4\)$/m);
  });

  test('lists workspaces as JSON', async () => {
    const result = await sh('den list --json');
    expect(result.code, explain(result)).toBe(0);
    const workspaces = JSON.parse(result.stdout) as { name: string; owner: string; status: string; params: Record<string, unknown> }[];
    expect(workspaces).toEqual([expect.objectContaining({ name: 'demo', owner: 'admin', status: 'running' })]);
    expect(workspaces[0].params.greeting).toBe('hi');
  });

  test('runs a command in the workspace with its environment and home', async () => {
    const result = await sh(`den exec demo -- sh -c 'echo $DEN_WORKSPACE_NAME; pwd'`);
    expect(result.code, explain(result)).toBe(0);
    const [name, cwd] = result.stdout.trim().split('\n');
    expect(name).toBe('demo');
    expect(cwd).toMatch(/^\//);
  });

  test('pipes stdin to the command and passes on its exit code', async () => {
    const echoed = await den(['exec', 'demo', '--', 'cat'], { input: 'hello from stdin\n' });
    expect(echoed.code, explain(echoed)).toBe(0);
    expect(echoed.stdout).toBe('hello from stdin\n');

    const failed = await den(['exec', 'demo', '--', 'sh', '-c', 'echo oops >&2; exit 3']);
    expect(failed.code, explain(failed)).toBe(3);
    expect(failed.stderr).toBe('oops\n');
  });

  test('prints the build log with step timings', async () => {
    const result = await sh('den logs demo');
    expect(result.code, explain(result)).toBe(0);
    expect(result.stdout).toMatch(/==> \w+/);
    expect(result.stderr).toMatch(/STEP\s+STATE\s+TOOK/);
    expect(result.stderr).toMatch(/Build #1 \(start\) succeeded/);
  });

  test('shows the workspace in a table and as JSON', async () => {
    const table = await den(['list']);
    expect(table.code, explain(table)).toBe(0);
    expect(table.stdout).toMatch(/^NAME\s+TEMPLATE\s+STATUS/);
    expect(table.stdout).toMatch(/^demo\s+starter@v1\s+running/m);
    const shown = await den(['show', 'admin/demo', '--json']);
    expect(shown.code, explain(shown)).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({ name: 'demo', owner: 'admin', isolation: { sandboxed: bwrapAvailable() } });
    const fields = await den(['show', 'admin/demo']);
    expect(fields.stdout).toMatch(bwrapAvailable() ? /^isolation:\s+sandboxed$/m : /^isolation:\s+NOT isolated$[\s\S]*Warning: bubblewrap/m);
  });

  test('after its agent is killed, shows the workspace down, says so on exec, and `den start` brings it back', async () => {
    const { id } = JSON.parse((await den(['show', 'demo', '--json'])).stdout);
    const state = JSON.parse(readFileSync(join(server.dataDir, 'workspaces', id, 'state.json'), 'utf8'));
    process.kill(-state.agent.pid, 'SIGKILL');
    const deadline = Date.now() + DOWN_TIMEOUT_MS;
    let list = await den(['list']);
    while (!/^demo\s+starter@v1\s+running \(down\)/m.test(list.stdout) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      list = await den(['list']);
    }
    expect(list.stdout).toMatch(/^demo\s+starter@v1\s+running \(down\)/m);
    expect((await den(['show', 'demo'])).stdout).toMatch(/^health:\s+down since \S+: The agent of workspace 'admin\/demo' exited at .* \(killed by signal SIGKILL\)\.$/m);
    const exec = await den(['exec', 'demo', '--', 'true']);
    expect(exec.code).not.toBe(0);
    expect(exec.stderr).toMatch(/The agent of workspace 'admin\/demo' exited at .*\. Start it again with `den start demo`\./);
    expect(exec.stderr).not.toContain('reconnects by itself');
    const started = await den(['start', 'demo', '--wait']);
    expect(started.code, explain(started)).toBe(0);
    expect((await den(['exec', 'demo', '--', 'true'])).code).toBe(0);
  });

  test('restarts the workspace, following the stop build and the start build chained to it', async () => {
    const result = await den(['restart', 'demo', '--wait']);
    expect(result.code, explain(result)).toBe(0);
    expect(result.stderr).toMatch(/Build #\d+ \(start\) follows\./);
    expect(result.stdout).toMatch(/\(start\) succeeded.*admin\/demo is running\./);
  });

  test('stops, starts and deletes the workspace, waiting for each build', async () => {
    const result = await sh('den stop demo --wait && den start demo --wait && den delete demo --wait');
    expect(result.code, explain(result)).toBe(0);
    expect(result.stdout).toMatch(/admin\/demo is stopped\./);
    expect(result.stdout).toMatch(/admin\/demo is running\./);
    expect(result.stdout).toMatch(/Deleted admin\/demo\.|admin\/demo is deleted\./);
    const list = await den(['list', '--json']);
    expect(JSON.parse(list.stdout)).toEqual([]);
  });

  test('exits 1 with the build\'s error when the build it waits for fails', async () => {
    const dir = join(work, 'failing-template');
    mkdirSync(dir);
    writeFileSync(
      join(dir, 'template.yaml'),
      'name: failing\nworkspace:\n  image: den/base:bookworm\n  startup:\n    - name: broken\n      run: echo about to fail; exit 7\n',
    );
    expect((await den(['templates', 'push', dir])).code).toBe(0);
    const result = await den(['create', 'broken', '--template', 'failing', '--wait']);
    expect(result.code, explain(result)).toBe(1);
    expect(result.stderr).toContain('broken | about to fail');
    expect(result.stderr).toMatch(/Build #1 \(start\) failed in .+: .*exited with code 7/);
    const deleted = await den(['delete', 'broken', '--wait']);
    expect(deleted.code, explain(deleted)).toBe(0);
  });

  test('cancels a build, waiting for it to end, and refuses a second cancel with the server\'s sentence', async () => {
    const dir = join(work, 'holding-template');
    mkdirSync(dir);
    // the blocking startup script keeps the start build in its agent step until it is canceled
    writeFileSync(
      join(dir, 'template.yaml'),
      'name: holding\nworkspace:\n  image: den/base:bookworm\n  startup:\n    - name: hold\n      run: sleep 300\n',
    );
    expect((await den(['templates', 'push', dir])).code).toBe(0);
    expect((await den(['create', 'held', '--template', 'holding'])).code).toBe(0);
    const canceled = await den(['cancel', 'held', '--wait']);
    expect(canceled.code, explain(canceled)).toBe(0);
    expect(canceled.stdout).toMatch(/Build #1 \(start\) canceled.*Canceled by admin.*admin\/held is (failed|stopped)\./);
    const again = await den(['cancel', 'held']);
    expect(again.code, explain(again)).toBe(1);
    expectSentence(again.stderr, /admin\/held' has no queued or running build to cancel/);
    const deleted = await den(['delete', 'held', '--wait']);
    expect(deleted.code, explain(deleted)).toBe(0);
  });

  test('reports an unknown workspace with the server\'s sentence and exit 1', async () => {
    const result = await den(['show', 'nope']);
    expect(result.code, explain(result)).toBe(1);
    expectSentence(result.stderr, /no workspace 'admin\/nope'/);
  });

  test('refuses a --param without = as a usage error (exit 2) before calling the server', async () => {
    const result = await den(['create', 'bad', '--template', 'starter', '--param', 'greeting']);
    expect(result.code, explain(result)).toBe(2);
    expectSentence(result.stderr, /--param 'greeting' is not KEY=VALUE/);
  });

  test('lists each parameter the server rejects under its sentence, exit 1', async () => {
    const result = await den(['create', 'bad', '--template', 'starter', '--param', 'nosuch=1']);
    expect(result.code, explain(result)).toBe(1);
    expect(result.stderr).toMatch(/^den: .+\.$/m);
    expect(result.stderr).toMatch(/^ {2}params\.nosuch: /m);
  });

  test('treats a missing argument as a usage error with exit 2', async () => {
    const result = await den(['show']);
    expect(result.code, explain(result)).toBe(2);
    expect(result.stderr).toMatch(/missing required argument/);
  });

  test('manages users and SSH keys', async () => {
    const created = await den(['users', 'create', 'alice', '--password', 'alice-password', '--role', 'template-admin']);
    expect(created.code, explain(created)).toBe(0);
    const listed = await den(['users', 'list']);
    expect(listed.stdout).toMatch(/^alice\s+.*template-admin\s+active/m);
    expect((await den(['users', 'set-role', 'alice', 'member'])).code).toBe(0);
    expect((await den(['users', 'suspend', 'alice'])).code).toBe(0);
    const users = JSON.parse((await den(['users', 'list', '--json'])).stdout) as { username: string; role: string; suspended: boolean }[];
    expect(users.find((user) => user.username === 'alice')).toMatchObject({ role: 'member', suspended: true });
    const deleted = await den(['users', 'delete', 'alice']);
    expect(deleted.code, explain(deleted)).toBe(0);

    const keyFile = join(work, 'id_ed25519');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'laptop', '-f', keyFile], {});
    const added = await den(['keys', 'add', `${keyFile}.pub`, '--json']);
    expect(added.code, explain(added)).toBe(0);
    const key = JSON.parse(added.stdout) as { id: string; fingerprint: string };
    expect(key.fingerprint).toMatch(/^SHA256:/);
    const keys = await den(['keys', 'list']);
    expect(keys.stdout).toContain(key.fingerprint);
    expect((await den(['keys', 'remove', key.id])).code).toBe(0);
  });

  test('manages API tokens and revokes its own on logout', async () => {
    const created = await den(['tokens', 'create', 'ci', '--json']);
    expect(created.code, explain(created)).toBe(0);
    const token = JSON.parse(created.stdout) as { id: string; token: string };
    const viaEnv = await den(['whoami', '--json'], { configHome: join(work, 'config-env'), env: { DEN_URL: url, DEN_TOKEN: token.token } });
    expect(viaEnv.code, explain(viaEnv)).toBe(0);
    expect(JSON.parse(viaEnv.stdout)).toMatchObject({ username: 'admin' });
    const revoked = await den(['tokens', 'revoke', token.id]);
    expect(revoked.code, explain(revoked)).toBe(0);
    const afterRevoke = await den(['whoami'], { configHome: join(work, 'config-env'), env: { DEN_URL: url, DEN_TOKEN: token.token } });
    expect(afterRevoke.code, explain(afterRevoke)).toBe(1);

    const logout = await den(['logout']);
    expect(logout.code, explain(logout)).toBe(0);
    const afterLogout = await den(['whoami']);
    expect(afterLogout.code, explain(afterLogout)).toBe(1);
    expectSentence(afterLogout.stderr, /not logged in/);
  });
});

describe('den CLI without a server', () => {
  test('prints help with examples and exits 0', async () => {
    const result = await den(['--help']);
    expect(result.code, explain(result)).toBe(0);
    expect(result.stdout).toContain('Examples:');
    const sub = await den(['templates', 'push', '--help']);
    expect(sub.code, explain(sub)).toBe(0);
    expect(sub.stdout).toContain('--activate');
  });

  test('runs from the TypeScript sources when asked to (the bundle is only a speed-up)', async () => {
    const result = await den(['exec', '--help'], { env: { DEN_CLI_FROM_SOURCE: '1' } });
    expect(result.code, explain(result)).toBe(0);
    expect(result.stdout).toContain('den exec demo --');
  });

  test('rejects an unknown command with exit 2', async () => {
    const result = await den(['frobnicate']);
    expect(result.code, explain(result)).toBe(2);
    expect(result.stderr).toMatch(/unknown command/);
  });

  test('names a broken config file and how to fix it', async () => {
    const broken = join(work, 'config-broken');
    mkdirSync(join(broken, 'den'), { recursive: true });
    writeFileSync(join(broken, 'den', 'config.json'), '{ not json');
    const result = await den(['whoami'], { configHome: broken });
    expect(result.code, explain(result)).toBe(1);
    expectSentence(result.stderr, /config\.json is not valid JSON\. Delete it and run `den login` again\./);
  });
});
