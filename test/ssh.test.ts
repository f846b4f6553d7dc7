import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import ssh2 from 'ssh2';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createApiToken } from '../server/auth/api-tokens.ts';
import { bwrapAvailable } from '../server/runtimes/process/sandbox.ts';
import { SFTP_SERVER_PATHS } from '../server/ssh/session-channel.ts';
import { systemClock } from '../server/store/time.ts';
import { addSshKey } from '../server/users/ssh-keys.ts';
import { idleDriver } from './support/idle-driver.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { generateKey, isolatedOptions, run, SFTP_SERVER_PRESENT, SSH_CLIENT_PRESENT, type RunResult } from './support/openssh.ts';
import { startRealAgent } from './support/real-agent.ts';
import { seedWorkspace, type SeededWorkspace } from './support/workspace-seed.ts';

/**
 * The SSH gateway end to end with the real OpenSSH client (ssh, scp, sftp) against the real den
 * server and a real agent process: what VS Code Remote-SSH and JetBrains Gateway do (exec of a
 * script on stdin, forwards to a port and a unix socket) and what people do by hand.
 */

const FORWARD_TIMEOUT_MS = 15_000;
/** the test server's per-user connection limit (den's default is far higher) */
const CONNECTIONS_PER_USER = 6;
/** the test server's login grace (den's default is 60 s): long enough for any client here to authenticate */
const LOGIN_GRACE_MS = 8_000;
const CI = process.env.CI === 'true';
const missing = !SSH_CLIENT_PRESENT ? 'the OpenSSH client (apt-get install openssh-client)' : !SFTP_SERVER_PRESENT ? 'sftp-server (apt-get install openssh-sftp-server)' : undefined;
if (missing && !CI) console.warn(`test/ssh.test.ts skipped: ${missing} is not installed.`);

interface Ctx {
  server: TestServer;
  alice: SeededWorkspace;
  bob: SeededWorkspace;
  stopped: SeededWorkspace;
  aliceKey: string;
  aliceRsaKey: string;
  bobKey: string;
  strangerKey: string;
  aliceToken: string;
  home: string;
  agent: ChildProcess;
  port: number;
}

describe.skipIf(missing !== undefined && !CI)('SSH gateway with the OpenSSH client', () => {
  const ctx = {} as Ctx;
  const dirs: string[] = [];
  const servers: Server[] = [];
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'den-ssh-srv-'));
    dirs.push(dataDir);
    ctx.server = await startTestServer({ dataDir, listen: true, ssh: true, startWorkers: false, driver: () => idleDriver, sshLimits: { channelsPerConnection: 20, connectionsPerUser: CONNECTIONS_PER_USER, loginGraceMs: LOGIN_GRACE_MS } });
    ctx.port = ctx.server.sshPort!;
    const db = ctx.server.store.db;
    ctx.alice = await seedWorkspace(db, { username: 'alice', workspaceName: 'dev' });
    ctx.bob = await seedWorkspace(db, { username: 'bob', workspaceName: 'mine' });
    ctx.stopped = await seedWorkspace(db, { username: 'alice', userId: ctx.alice.userId, workspaceName: 'off' });
    await db.updateTable('workspaces').set({ status: 'stopped' }).where('id', '=', ctx.stopped.workspaceId).execute();
    ctx.aliceToken = (await createApiToken(db, systemClock, ctx.alice.userId, { name: 't' })).token;

    const keys = mkdtempSync(join(tmpdir(), 'den-ssh-keys-'));
    dirs.push(keys);
    ctx.aliceKey = generateKey(keys, 'alice');
    ctx.aliceRsaKey = generateKey(keys, 'alice-rsa', 'rsa');
    ctx.bobKey = generateKey(keys, 'bob', 'ecdsa');
    ctx.strangerKey = generateKey(keys, 'stranger');
    for (const [userId, key] of [[ctx.alice.userId, ctx.aliceKey], [ctx.alice.userId, ctx.aliceRsaKey], [ctx.bob.userId, ctx.bobKey]] as const) {
      await addSshKey(db, systemClock, userId, { name: '', publicKey: readFileSync(`${key}.pub`, 'utf8') });
    }

    ctx.home = mkdtempSync(join(tmpdir(), 'den-ssh-home-'));
    dirs.push(ctx.home);
    ctx.agent = await startRealAgent(ctx.server, ctx.alice, ctx.home, { env: { GREETING: 'hello' } });
  });
  // forwards and held sessions end with their test, so connections do not pile up against the per-user limit
  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
  });
  afterAll(async () => {
    for (const server of servers) server.close();
    ctx.agent?.kill('SIGKILL');
    await ctx.server?.app.close();
    await ctx.server?.store.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true, maxRetries: 5 });
  });

  const ssh = (login: string, command: string[], options: { key?: string; input?: string; extra?: string[] } = {}): Promise<RunResult> =>
    run('ssh', [...isolatedOptions(options.key ?? ctx.aliceKey, options.extra), '-p', String(ctx.port), `${login}@127.0.0.1`, ...command], { input: options.input });

  it('runs a command: stdout and stderr apart, stdin piped, the exit code returned, in the workspace home and env', async () => {
    const result = await ssh('dev', ['read line; echo "out:$line:$GREETING:$PWD"; echo err >&2; exit 7'], { input: 'typed\n' });
    expect(result).toEqual({ code: 7, stdout: `out:typed:hello:${ctx.home}\n`, stderr: 'err\n' });
  });

  it('passes the locale and terminal variables a client sends (env), and no others', async () => {
    const result = await ssh('dev', ['echo "$LC_DEN-$LANG-${SECRET_THING:-unset}"'], { extra: ['-o', 'SetEnv=LC_DEN=yes LANG=C.UTF-8 SECRET_THING=leak'] });
    expect(result).toMatchObject({ code: 0, stdout: 'yes-C.UTF-8-unset\n' });
  });

  it('runs a bash script given on stdin, as VS Code Remote-SSH does, and reports uname -m', async () => {
    const result = await ssh('dev', ['bash'], { input: 'set -e\nuname -m\necho "script-done $((6*7))"\n' });
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/^(x86_64|aarch64)\nscript-done 42\n$/);
  });

  it('returns the exit signal of a command killed by one', async () => {
    const result = await ssh('dev', ['kill -TERM $$']);
    // an exit-signal makes OpenSSH exit with 255; an exit-status would have given 143
    expect(result.code).toBe(255);
    // and the signal is named in it (255 alone could be any failure of ssh)
    const client = await connectClient(ctx.aliceKey, 'dev');
    try {
      const exit = await new Promise<unknown[]>((resolve, reject) => client.exec('kill -TERM $$', (error, stream) => {
        if (error) return reject(error);
        stream.on('exit', (...args: unknown[]) => resolve(args)).resume();
      }));
      // ssh2 puts back the SIG the wire (RFC 4254 6.10) leaves out
      expect(exit).toEqual([null, 'SIGTERM', false, '']);
    } finally {
      client.end();
    }
  });

  it('accepts OWNER/WS and WS.OWNER, ECDSA and RSA (rsa-sha2) keys', async () => {
    expect((await ssh('alice/dev', ['echo ok'])).stdout).toBe('ok\n');
    expect((await ssh('dev.alice', ['echo ok'])).stdout).toBe('ok\n');
    expect((await ssh('dev', ['echo rsa'], { key: ctx.aliceRsaKey })).stdout).toBe('rsa\n');
  });

  it('lets a user with the owner role reach another user\'s workspace as OWNER/WS and WS.OWNER, while WS alone names their own', async () => {
    const admin = await seedWorkspace(ctx.server.store.db, { username: 'root', workspaceName: 'own', role: 'owner' });
    const keys = mkdtempSync(join(tmpdir(), 'den-ssh-keys-'));
    dirs.push(keys);
    const key = generateKey(keys, 'root');
    await addSshKey(ctx.server.store.db, systemClock, admin.userId, { name: '', publicKey: readFileSync(`${key}.pub`, 'utf8') });
    expect(await ssh('alice/dev', ['echo "as-owner:$GREETING"'], { key })).toMatchObject({ code: 0, stdout: 'as-owner:hello\n' });
    expect((await ssh('dev.alice', ['echo ok'], { key })).stdout).toBe('ok\n');
    expect((await ssh('dev', ['true'], { key })).stderr).toBe("There is no workspace 'root/dev'. Run `den list` to see your workspaces.\r\n");
  });

  it('refuses an RSA signature with SHA-1 (ssh-rsa)', async () => {
    const result = await ssh('dev', ['echo no'], { key: ctx.aliceRsaKey, extra: ['-o', 'PubkeyAcceptedAlgorithms=ssh-rsa'] });
    expect(result.code).toBe(255);
    expect(result.stderr).toContain('Permission denied (publickey)');
  });

  it('allocates a pty with the client\'s TERM and size', async () => {
    // -tt forces a pty with stdin from a pipe; stty prints rows and columns
    const result = await run('ssh', [...isolatedOptions(ctx.aliceKey), '-tt', '-p', String(ctx.port), 'dev@127.0.0.1', 'echo "term=$TERM"; stty size; tty'], { env: { ...process.env, TERM: 'xterm-256color' } });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('term=xterm-256color');
    // ssh -tt from a pipe knows no size and sends 0x0: the workspace gets the usual 24x80
    expect(result.stdout).toContain('24 80\r\n');
    expect(result.stdout).toMatch(/\/dev\/pts\/\d+/);
  });

  it('refuses agent forwarding asked with want_reply (ssh2) when the template does not allow it, and the connection goes on', async () => {
    const client = new ssh2.Client();
    // ssh2 asks for forwarding (auth-agent-req@openssh.com) only with an agent configured; the refusal comes before it is ever used
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve());
      client.once('error', reject);
      client.connect({ host: '127.0.0.1', port: ctx.port, username: 'dev', privateKey: readFileSync(ctx.aliceKey), agent: join(ctx.home, 'no-agent.sock') });
    });
    try {
      // ssh2 takes agentForward per command too; its types know it only on the connection
      const forwarding: ssh2.ExecOptions & { agentForward: boolean } = { agentForward: true };
      const refused = await new Promise<Error | undefined>((resolve) => client.exec('true', forwarding, (error, stream) => {
        stream?.on('close', () => resolve(undefined)).resume();
        if (error) resolve(error);
      }));
      expect(refused?.message).toBe('Unable to request agent forwarding');
      expect(await execOn(client, 'echo "${SSH_AUTH_SOCK:-no-agent}"')).toBe('no-agent\n');
    } finally {
      client.end();
    }
  });

  it('refuses a key nobody registered, and anything but publickey', async () => {
    const stranger = await ssh('dev', ['true'], { key: ctx.strangerKey });
    expect(stranger.code).toBe(255);
    expect(stranger.stderr).toContain('Permission denied (publickey)');
    // a client that tries a password, then keyboard-interactive, is refused both and told publickey is the only method
    const tries: ssh2.AnyAuthMethod[] = [
      { type: 'password', username: 'dev', password: 'guess' },
      { type: 'keyboard-interactive', username: 'dev', prompt: (_name, _instructions, _lang, prompts, finish) => finish(prompts.map(() => 'guess')) },
    ];
    // ssh2 gives up on `false` (its README); its types leave that out
    const giveUp = false as unknown as ssh2.AnyAuthMethod;
    const offered: string[][] = [];
    const outcome = await new Promise<Error | 'signed in'>((resolve) => {
      const client = new ssh2.Client();
      client.once('ready', () => {
        client.end();
        resolve('signed in');
      });
      client.once('error', resolve);
      client.connect({
        host: '127.0.0.1', port: ctx.port, username: 'dev',
        authHandler: (methodsLeft, _partial, next) => {
          if (methodsLeft) offered.push(methodsLeft);
          next(tries.shift() ?? giveUp);
        },
      });
    });
    expect(outcome).toBeInstanceOf(Error);
    expect((outcome as Error).message).toMatch(/All configured authentication methods failed/);
    expect(offered).toEqual([['publickey'], ['publickey']]);
  });

  it('refuses another user\'s workspace exactly like a missing one', async () => {
    const others = await ssh('bob/mine', ['true']);
    const missingOne = await ssh('alice/nope', ['true']);
    expect(others.code).toBe(1);
    expect(others.stderr).toBe("There is no workspace 'bob/mine'. Run `den list` to see your workspaces.\r\n");
    expect(missingOne.stderr).toBe("There is no workspace 'alice/nope'. Run `den list` to see your workspaces.\r\n");
    expect((await ssh('mine', ['true'], { key: ctx.bobKey })).stderr).toContain('is not connected');
  });

  it('answers a stopped workspace with a sentence and an exit status, offering den start', async () => {
    const result = await ssh('off', ['true']);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe("Workspace 'alice/off' is stopped. Start it with `den start off` and connect again.\r\n");
  });

  it('forwards a local port to a port in the workspace (-L), and refuses a port nothing listens on', async () => {
    const upstream = await listen(createServer((socket) => socket.end('from-workspace')));
    const local = await freePort();
    const forward = startForward(['-N', '-L', `${local}:127.0.0.1:${port(upstream)}`]);
    expect(await readFrom(await connectWhenUp(local, forward))).toBe('from-workspace');
    // a port nothing listens on: the client's connection is closed, the forward and the connection go on
    const closed = await freePort();
    const refusedLocal = await freePort();
    const refusedForward = startForward(['-N', '-L', `${refusedLocal}:127.0.0.1:${closed}`]);
    const said = stderrMatching(refusedForward, /open failed: connect failed: (.*)\r?\n/);
    expect(await readFrom(await connectWhenUp(refusedLocal, refusedForward))).toBe('');
    expect((await said)[1]).toBe(`Nothing listens on 127.0.0.1:${closed} in the workspace; start the program that should serve it, or check the port.`);
    expect(await readFrom(await connectWhenUp(local, forward))).toBe('from-workspace');
  });

  it('forwards to a unix socket in the workspace (-L port:path)', async () => {
    const path = join(ctx.home, 'app.sock');
    await listen(createServer((socket) => socket.on('data', (data) => socket.end(`unix:${data}`))), path);
    const local = await freePort();
    const forward = startForward(['-N', '-L', `${local}:${path}`]);
    const socket = await connectWhenUp(local, forward);
    socket.write('ping');
    expect(await readFrom(socket)).toBe('unix:ping');
  });

  it('forwards a port in the workspace to the client\'s side (-R), on a port den chooses (-R 0) or a given one', async () => {
    const upstream = await listen(createServer((socket) => socket.on('data', (data) => socket.end(`client-side:${data}`))));
    const chosen = startForward(['-N', '-R', `0:127.0.0.1:${port(upstream)}`]);
    const allocated = Number((await stderrMatching(chosen, /Allocated port (\d+) for remote forward/))[1]);
    const given = await freePort();
    const fixed = startForward(['-N', '-R', `${given}:127.0.0.1:${port(upstream)}`]);
    // the agent listens in the workspace (this machine's loopback for the process runtime); the bytes cross to the client's side and back
    for (const workspacePort of [allocated, given]) {
      const socket = await connectWhenUp(workspacePort, workspacePort === given ? fixed : chosen);
      socket.write('hi');
      expect(await readFrom(socket)).toBe('client-side:hi');
    }
  });

  it('refuses a remote forward whose port is taken in the workspace, that request only', async () => {
    const upstream = await listen(createServer((socket) => socket.end('served')));
    const taken = await listen(createServer((socket) => socket.end('the squatter')));
    const free = await freePort();
    // no ExitOnForwardFailure: ssh warns about the refused forward and keeps the other one
    const child = startForward(['-N', '-R', `${port(taken)}:127.0.0.1:${port(upstream)}`, '-R', `${free}:127.0.0.1:${port(upstream)}`], { exitOnFailure: false });
    await stderrMatching(child, new RegExp(`remote port forwarding failed for listen port ${port(taken)}`));
    expect(await readFrom(await connectWhenUp(free, child))).toBe('served');
    expect(await readFrom(await connectWhenUp(port(taken), child))).toBe('the squatter');
  });

  it('forwards a unix socket in the workspace to the client\'s side (-R path:host:port)', async () => {
    const upstream = await listen(createServer((socket) => socket.on('data', (data) => socket.end(`via-socket:${data}`))));
    const path = join(ctx.home, 'remote.sock');
    const forward = startForward(['-N', '-R', `${path}:127.0.0.1:${port(upstream)}`]);
    const socket = await connectWhenUp(path, forward);
    socket.write('ping');
    expect(await readFrom(socket)).toBe('via-socket:ping');
  });

  it('stops a remote forward on cancel-tcpip-forward, and all of them when the connection ends', async () => {
    const client = await connectClient(ctx.aliceKey, 'dev');
    let second = 0;
    try {
      client.on('tcp connection', (_info, accept) => accept().end('accepted'));
      const forwardIn = () => new Promise<number>((resolve, reject) => client.forwardIn('127.0.0.1', 0, (error, bound) => (error ? reject(error) : resolve(bound))));
      const first = await forwardIn();
      second = await forwardIn();
      expect(await readFrom(await connectWhenUp(first))).toBe('accepted');
      await new Promise<void>((resolve, reject) => client.unforwardIn('127.0.0.1', first, (error) => (error ? reject(error) : resolve())));
      // the agent closes its listener as the close frame arrives, just after the reply
      await waitUntilAsync(() => refusedAt(first), 'the cancelled forward to stop');
      expect(await readFrom(await connectWhenUp(second))).toBe('accepted');
      // a cancel of a forward that does not exist is refused, the connection goes on
      await expect(new Promise<void>((resolve, reject) => client.unforwardIn('127.0.0.1', first, (error) => (error ? reject(error) : resolve())))).rejects.toThrow();
      expect(await readFrom(await connectWhenUp(second))).toBe('accepted');
    } finally {
      client.end();
    }
    await waitUntilAsync(() => refusedAt(second), 'the forward to stop with its connection');
  });

  it('serves a SOCKS proxy (-D) whose connections open in the workspace', async () => {
    const upstream = await listen(createServer((socket) => socket.end('socks-ok')));
    const local = await freePort();
    const forward = startForward(['-N', '-D', `127.0.0.1:${local}`]);
    const socket = await connectWhenUp(local, forward);
    await socks5Connect(socket, 'localhost', port(upstream));
    const reply = await readFrom(socket);
    expect(reply.charCodeAt(1)).toBe(0);
    expect(reply.slice(10)).toBe('socks-ok');
  });

  it('copies files both ways with scp and lists, puts and gets with sftp', async () => {
    const local = mkdtempSync(join(tmpdir(), 'den-ssh-files-'));
    dirs.push(local);
    const payload = Buffer.alloc(300_000, 'x').toString() + 'end\n';
    writeFileSync(join(local, 'up.txt'), payload);
    const target = (path: string) => `dev@127.0.0.1:${path}`;
    const scpUp = await run('scp', [...isolatedOptions(ctx.aliceKey), '-P', String(ctx.port), join(local, 'up.txt'), target('up.txt')]);
    expect(scpUp).toMatchObject({ code: 0 });
    expect(readFileSync(join(ctx.home, 'up.txt'), 'utf8')).toBe(payload);
    const scpDown = await run('scp', [...isolatedOptions(ctx.aliceKey), '-P', String(ctx.port), target('up.txt'), join(local, 'down.txt')]);
    expect(scpDown).toMatchObject({ code: 0 });
    expect(readFileSync(join(local, 'down.txt'), 'utf8')).toBe(payload);

    writeFileSync(join(local, 'put.txt'), 'via sftp\n');
    const batch = `put ${join(local, 'put.txt')} put.txt\nls -1\nget put.txt ${join(local, 'got.txt')}\n`;
    const sftp = await run('sftp', [...isolatedOptions(ctx.aliceKey), '-P', String(ctx.port), '-b', '-', 'dev@127.0.0.1'], { input: batch });
    expect(sftp.code).toBe(0);
    expect(sftp.stdout).toContain('put.txt');
    expect(readFileSync(join(local, 'got.txt'), 'utf8')).toBe('via sftp\n');
  });

  it.skipIf(!bwrapAvailable())('answers sftp and scp with a sentence when the workspace has no sftp-server', async () => {
    const bare = await seedWorkspace(ctx.server.store.db, { username: 'alice', userId: ctx.alice.userId, workspaceName: 'bare' });
    const home = mkdtempSync(join(tmpdir(), 'den-ssh-bare-'));
    dirs.push(home);
    // the agent runs in a mount namespace where every sftp-server den looks for is /dev/null (not executable)
    const hidden = [...new Set(SFTP_SERVER_PATHS.filter((path) => existsSync(path)).map((path) => realpathSync(path)))];
    const wrapper = ['bwrap', '--bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--unshare-pid', '--die-with-parent', ...hidden.flatMap((path) => ['--ro-bind', '/dev/null', path]), '--'];
    const agent = await startRealAgent(ctx.server, bare, home, {}, { wrapper });
    try {
      const sentence = 'This workspace has no sftp-server, so sftp and scp (which uses sftp) cannot reach it. Add the openssh-sftp-server package to its image, or use scp -O.';
      const sftp = await run('sftp', [...isolatedOptions(ctx.aliceKey), '-P', String(ctx.port), '-b', '-', 'bare@127.0.0.1'], { input: 'ls\n' });
      expect(sftp.code).not.toBe(0);
      expect(sftp.stderr).toContain(sentence);
      const scp = await run('scp', [...isolatedOptions(ctx.aliceKey), '-P', String(ctx.port), 'bare@127.0.0.1:anything', join(home, 'copy')]);
      expect(scp.code).not.toBe(0);
      expect(scp.stderr).toContain(sentence);
      // the session itself still runs there
      expect((await ssh('bare', ['echo shell-ok'])).stdout).toBe('shell-ok\n');
    } finally {
      // bwrap's --die-with-parent takes the agent with it; waiting for the exit reaps bwrap
      const exited = new Promise((resolve) => agent.once('exit', resolve));
      agent.kill('SIGKILL');
      await exited;
      await ctx.server.store.db.updateTable('workspaces').set({ deleted_at: new Date().toISOString() }).where('id', '=', bare.workspaceId).execute();
    }
  });

  it('lists open SSH connections (who, from where, since) and records activity', async () => {
    const before = (await getJson(`/api/v1/workspaces/alice/dev`)).lastActivityAt;
    expect(before).not.toBeNull();
    const local = await freePort();
    const forward = startForward(['-N', '-L', `${local}:127.0.0.1:1`]);
    await connectWhenUp(local, forward).then((socket) => socket.destroy());
    const { sessions } = await getJson(`/api/v1/workspaces/alice/dev/ssh-sessions`);
    expect(sessions).toContainEqual(expect.objectContaining({ user: 'alice', remoteAddress: '127.0.0.1', via: 'ssh' }));
    expect(Number.isNaN(Date.parse(sessions[0].since))).toBe(false);
    const bobSees = await ctx.server.app.inject({ url: '/api/v1/workspaces/alice/dev/ssh-sessions', headers: { authorization: `Bearer ${(await createApiToken(ctx.server.store.db, systemClock, ctx.bob.userId, { name: 'b' })).token}` } });
    expect(bobSees.statusCode).toBe(404);
  });

  it('records an SSH connection as activity of the workspace it reaches', async () => {
    const quiet = await seedWorkspace(ctx.server.store.db, { username: 'alice', userId: ctx.alice.userId, workspaceName: 'quiet' });
    try {
      const lastActivity = async () => (await getJson('/api/v1/workspaces/alice/quiet')).lastActivityAt as string | null;
      expect(await lastActivity()).toBeNull();
      // no agent runs there, so the session is refused, but the connection reached the workspace
      await ssh('quiet', ['true']);
      await waitUntilAsync(async () => (await lastActivity()) !== null, 'the workspace\'s last activity');
    } finally {
      await ctx.server.store.db.updateTable('workspaces').set({ deleted_at: new Date().toISOString() }).where('id', '=', quiet.workspaceId).execute();
    }
  });

  it('forwards the client\'s SSH agent (ssh -A) when the template allows it: ssh-add in the workspace lists its key, through a private socket gone after the session', async () => {
    const agentSocket = await startSshAgentWith(ctx.aliceKey);
    const fingerprint = (await run('ssh-keygen', ['-lf', `${ctx.aliceKey}.pub`])).stdout.split(' ')[1];
    await withTemplate({ workspace: { image: 'i', ssh: { agentForwarding: true } } }, async () => {
      const result = await sshWithAgent(agentSocket, 'echo "$SSH_AUTH_SOCK"; stat -c %a "$(dirname "$SSH_AUTH_SOCK")"; ssh-add -l');
      expect(result).toMatchObject({ code: 0, stderr: '' });
      const [socket, mode, listing] = result.stdout.split('\n');
      expect(socket).toMatch(/^\/.*\/den-ssh-\w+\/agent\.sock$/);
      expect(mode).toBe('700');
      expect(listing).toContain(fingerprint);
      await waitUntil(() => !existsSync(socket) && !existsSync(dirname(socket)), 'the forwarded agent\'s socket and directory to be removed');
    });
  });

  it('answers an agent forwarding request that wants a reply (ssh2) once the template allowed it, and the command reaches the client\'s agent', async () => {
    const agentSocket = await startSshAgentWith(ctx.aliceKey);
    const fingerprint = (await run('ssh-keygen', ['-lf', `${ctx.aliceKey}.pub`])).stdout.split(' ')[1];
    await withTemplate({ workspace: { image: 'i', ssh: { agentForwarding: true } } }, async () => {
      const client = new ssh2.Client();
      await new Promise<void>((resolve, reject) => {
        client.once('ready', () => resolve());
        client.once('error', reject);
        client.connect({ host: '127.0.0.1', port: ctx.port, username: 'dev', privateKey: readFileSync(ctx.aliceKey), agent: agentSocket, agentForward: true });
      });
      try {
        expect(await execOn(client, 'ssh-add -l')).toContain(fingerprint);
      } finally {
        client.end();
      }
    });
  });

  it('refuses agent forwarding when the template does not allow it: the workspace has no SSH_AUTH_SOCK', async () => {
    const agentSocket = await startSshAgentWith(ctx.aliceKey);
    const result = await sshWithAgent(agentSocket, 'echo "${SSH_AUTH_SOCK:-unset}"; ssh-add -l');
    expect(result).toEqual({ code: 2, stdout: 'unset\n', stderr: 'Could not open a connection to your authentication agent.\n' });
  });

  it('refuses channels past the per-connection limit and keeps serving the connection', async () => {
    // 40 -L connections at once through one connection whose limit is 20 channels
    const upstream = await listen(createServer((socket) => setTimeout(() => socket.end('held'), 1_500)));
    const local = await freePort();
    const forward = startForward(['-N', '-L', `${local}:127.0.0.1:${port(upstream)}`]);
    await connectWhenUp(local, forward).then((socket) => socket.destroy());
    const said = stderrMatching(forward, /open failed: administratively prohibited: (.*)\r?\n/);
    const results = await Promise.all(Array.from({ length: 40 }, () => connectWhenUp(local, forward).then(readFrom)));
    expect((await said)[1]).toBe('This SSH connection has 20 channels open, the most den allows; close some sessions or forwarded connections and try again.');
    const served = results.filter((text) => text === 'held').length;
    expect(served).toBeGreaterThan(0);
    expect(served).toBeLessThanOrEqual(20);
    expect(results.filter((text) => text === '').length).toBeGreaterThanOrEqual(20);
    expect(await readFrom(await connectWhenUp(local, forward))).toBe('held');
  });

  it('follows the client terminal\'s resize (window-change) in the workspace pty', async () => {
    const { spawn: spawnPty } = await import('node-pty');
    const term = spawnPty('ssh', [...isolatedOptions(ctx.aliceKey), '-tt', '-p', String(ctx.port), 'dev@127.0.0.1', 'stty size; read line; stty size'], { cols: 100, rows: 30, env: { ...process.env, TERM: 'xterm' } as Record<string, string> });
    let output = '';
    term.onData((data) => (output += data));
    const exited = new Promise<number>((resolve) => term.onExit(({ exitCode }) => resolve(exitCode)));
    await waitUntil(() => output.includes('30 100'), 'the first stty size');
    term.resize(120, 40);
    // ssh sends window-change on SIGWINCH; give it a moment to reach the workspace before the next line
    await new Promise((resolve) => setTimeout(resolve, 300));
    term.write('\r');
    await waitUntil(() => output.includes('40 120'), 'the resized stty size');
    expect(await exited).toBe(0);
  });

  describe('through den\'s HTTP port (den ssh, ProxyCommand, config-ssh, port-forward)', () => {
    let env: NodeJS.ProcessEnv;
    let home: string;
    beforeAll(() => {
      home = mkdtempSync(join(tmpdir(), 'den-ssh-cli-'));
      dirs.push(home);
      // the CLI's own config and ~/.ssh live in a temporary HOME; ssh itself is pointed at them with -F
      env = { ...process.env, HOME: home, XDG_CONFIG_HOME: join(home, '.config'), DEN_URL: ctx.server.url!, DEN_TOKEN: ctx.aliceToken };
    });
    const den = (args: string[], input?: string) => run(process.execPath, [DEN_BIN, ...args], { env, input, timeoutMs: 60_000 });

    it('runs ssh with `den ssh --stdio` as the ProxyCommand, no key and no SSH port needed', async () => {
      const proxy = `${process.execPath} ${DEN_BIN} ssh --stdio dev`;
      const result = await run('ssh', [...isolatedOptions(undefined, ['-o', `ProxyCommand=${proxy}`]), 'dev@den.dev', 'echo "tunnel:$GREETING"; exit 3'], { env });
      expect(result).toMatchObject({ code: 3, stdout: 'tunnel:hello\n' });
      // while a tunnelled session is open it is listed as one
      const open = spawn('ssh', [...isolatedOptions(undefined, ['-o', `ProxyCommand=${proxy}`]), 'dev@den.dev', 'read line'], { env, stdio: ['pipe', 'ignore', 'ignore'] });
      children.push(open);
      await waitUntil(() => ctx.server.den.ssh.sessions(ctx.alice.workspaceId).some((session) => session.via === 'tunnel'), 'the tunnelled session in the list');
      const { sessions } = await getJson('/api/v1/workspaces/alice/dev/ssh-sessions');
      expect(sessions).toContainEqual(expect.objectContaining({ user: 'alice', via: 'tunnel', remoteAddress: '127.0.0.1' }));
      const shown = await den(['show', 'dev']);
      expect(shown.stdout).toMatch(/^last activity:\s+\S+ \(.*SSH\)$/m);
      expect(shown.stdout).toMatch(/^SSH sessions:\n(  .*\n)*  alice from 127\.0\.0\.1 via den ssh since /m);
      open.stdin!.end('done\n');
      expect(await new Promise((resolve) => open.once('exit', resolve))).toBe(0);
    });

    it('den ssh WS -- CMD runs the command, with the host key pinned, and returns its exit code', async () => {
      const result = await den(['ssh', 'dev', '--', 'echo', 'via-den-ssh;', 'exit', '4']);
      expect(result.stdout).toBe('via-den-ssh\n');
      expect(result.code).toBe(4);
      const hostKey = await den(['ssh', '--host-key']);
      expect(hostKey.code).toBe(0);
      const fingerprint = (await ctx.server.den.ssh.hostKey()).fingerprint;
      expect(hostKey.stdout.split('\n')[0]).toBe(fingerprint);
      expect(readFileSync(join(home, '.config', 'den', 'known_hosts'), 'utf8')).toContain((await ctx.server.den.ssh.hostKey()).publicKey);
    });

    it('den ssh WS opens an interactive shell in a pty', async () => {
      const { spawn: spawnPty } = await import('node-pty');
      const term = spawnPty(process.execPath, [DEN_BIN, 'ssh', 'dev'], { cols: 90, rows: 20, env: { ...env, TERM: 'xterm' } as Record<string, string> });
      let output = '';
      term.onData((data) => (output += data));
      const exited = new Promise<number>((resolve) => term.onExit(({ exitCode }) => resolve(exitCode)));
      term.write('echo "pty=$(stty size)"; exit 5\r');
      await waitUntil(() => output.includes('pty=20 90'), 'the shell\'s answer');
      expect(await exited).toBe(5);
    });

    it('refuses a workspace of another user through the tunnel like a missing one', async () => {
      const result = await run('ssh', [...isolatedOptions(undefined, ['-o', `ProxyCommand=${process.execPath} ${DEN_BIN} ssh --stdio bob/mine`]), 'x@den.x', 'true'], { env });
      expect(result.code).toBe(255);
      expect(result.stderr).toContain("There is no workspace 'bob/mine'");
    });

    it('den config-ssh writes an idempotent marked block, keeps other lines, and ssh den.WS works with it', async () => {
      const config = join(home, '.ssh', 'config');
      mkdirSync(join(home, '.ssh'), { recursive: true });
      writeFileSync(config, 'Host other\n  User me\n');
      const dry = await den(['config-ssh', '--dry-run']);
      expect(dry.code).toBe(0);
      expect(dry.stdout).toContain('Host den.dev');
      expect(readFileSync(config, 'utf8')).toBe('Host other\n  User me\n');

      expect((await den(['config-ssh'])).code).toBe(0);
      const written = readFileSync(config, 'utf8');
      expect(written.startsWith('Host other\n  User me\n\n# ------------ START-DEN-CONFIG-SSH')).toBe(true);
      expect(written).toContain('Host den.dev\n');
      expect(written).toContain('Host den.off\n');
      const again = await den(['config-ssh']);
      expect(again.stderr).toContain('is up to date');
      expect(readFileSync(config, 'utf8')).toBe(written);

      const viaConfig = await run('ssh', ['-F', config, '-o', 'BatchMode=yes', 'den.dev', 'echo from-config'], { env });
      expect(viaConfig).toMatchObject({ code: 0, stdout: 'from-config\n' });

      // a deleted workspace leaves the block; lines after the block stay too
      writeFileSync(config, readFileSync(config, 'utf8') + 'Host after\n  User you\n');
      await ctx.server.store.db.updateTable('workspaces').set({ deleted_at: new Date().toISOString() }).where('id', '=', ctx.stopped.workspaceId).execute();
      expect((await den(['config-ssh'])).code).toBe(0);
      const pruned = readFileSync(config, 'utf8');
      expect(pruned).not.toContain('den.off');
      expect(pruned.startsWith('Host other\n  User me\n\n')).toBe(true);
      expect(pruned.endsWith('# ------------- END-DEN-CONFIG-SSH -------------\nHost after\n  User you\n')).toBe(true);
      await ctx.server.store.db.updateTable('workspaces').set({ deleted_at: null }).where('id', '=', ctx.stopped.workspaceId).execute();
    });

    it('den port-forward relays several local ports to ports in the workspace', async () => {
      const one = await listen(createServer((socket) => socket.end('port-one')));
      const two = await listen(createServer((socket) => socket.on('data', (data) => socket.end(`two:${data}`))));
      const [localOne, localTwo] = [await freePort(), await freePort()];
      const forward = spawn(process.execPath, [DEN_BIN, 'port-forward', 'dev', `${localOne}:${port(one)}`, `${localTwo}:${port(two)}`], { env, stdio: ['ignore', 'ignore', 'pipe'] });
      children.push(forward);
      expect(await readFrom(await connectWhenUp(localOne, forward))).toBe('port-one');
      const socket = await connectWhenUp(localTwo, forward);
      socket.write('hi');
      expect(await readFrom(socket)).toBe('two:hi');
      // again: every connection dials its own tunnel
      expect(await readFrom(await connectWhenUp(localOne, forward))).toBe('port-one');
    });
  });

  it('keeps a session through a 5 s stall of the network path, answering the client\'s keepalives', async () => {
    // a TCP relay between ssh and the gateway that stops moving bytes for 5 s
    let stalled = false;
    const pairs: [Socket, Socket][] = [];
    const relay = await listen(createServer((client) => {
      const upstream = connect(ctx.port, '127.0.0.1');
      pairs.push([client, upstream]);
      const move = (from: Socket, to: Socket) => from.on('data', (chunk) => to.write(chunk));
      move(client, upstream);
      move(upstream, client);
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
      client.on('error', () => {});
      upstream.on('error', () => {});
    }));
    const stall = (on: boolean) => {
      stalled = on;
      for (const pair of pairs) for (const socket of pair) (on ? socket.pause() : socket.resume());
    };
    // 8 unanswered keepalives 1 s apart drop the connection: a gateway that did not answer them would fail this
    const session = run('ssh', [...isolatedOptions(ctx.aliceKey, ['-o', 'ServerAliveInterval=1', '-o', 'ServerAliveCountMax=8']), '-p', String(port(relay)), 'dev@127.0.0.1', 'sleep 11; echo survived'], { timeoutMs: 40_000 });
    await waitUntil(() => pairs.length > 0, 'the relayed connection');
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    stall(true);
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    expect(stalled).toBe(true);
    stall(false);
    expect(await session).toMatchObject({ code: 0, stdout: 'survived\n' });
  }, 45_000);

  it('refuses a session past the per-user connection limit with a sentence, and serves again once one closes', async () => {
    await waitUntil(() => ctx.server.den.ssh.sessions(ctx.alice.workspaceId).length === 0, 'the earlier tests\' SSH connections to close');
    const held = Array.from({ length: CONNECTIONS_PER_USER }, () => {
      const child = spawn('ssh', [...isolatedOptions(ctx.aliceKey), '-p', String(ctx.port), 'dev@127.0.0.1', 'read line'], { stdio: ['pipe', 'ignore', 'ignore'] });
      children.push(child);
      return child;
    });
    await waitUntil(() => ctx.server.den.ssh.sessions(ctx.alice.workspaceId).length >= CONNECTIONS_PER_USER, 'the held sessions');
    const refused = await ssh('dev', ['echo no']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toBe(`You have ${CONNECTIONS_PER_USER} SSH connections open, the most den allows; close some and connect again.\r\n`);
    held[0].stdin!.end('bye\n');
    await new Promise((resolve) => held[0].once('exit', resolve));
    await waitUntil(() => ctx.server.den.ssh.sessions(ctx.alice.workspaceId).length < CONNECTIONS_PER_USER, 'a session to end');
    expect((await ssh('dev', ['echo yes'])).stdout).toBe('yes\n');
  });

  it('ends an open SSH connection when its user is suspended', async () => {
    // bob's workspace has no agent, but a connection without a session (-N) stays open until den ends it
    const held = spawn('ssh', [...isolatedOptions(ctx.bobKey), '-N', '-p', String(ctx.port), 'mine@127.0.0.1'], { stdio: ['ignore', 'ignore', 'ignore'] });
    children.push(held);
    await waitUntil(() => ctx.server.den.ssh.sessions(ctx.bob.workspaceId).length === 1, 'bob\'s connection');
    ctx.server.den.revocations.publish({ kind: 'user', userId: ctx.bob.userId, reason: 'suspended' });
    await waitUntil(() => held.exitCode !== null, 'ssh to exit after the suspension');
    expect(ctx.server.den.ssh.sessions(ctx.bob.workspaceId)).toEqual([]);
  });

  it('ends the SSH connections a key opened when that key is removed, and only those', async () => {
    const hold = (key: string) => {
      const child = spawn('ssh', [...isolatedOptions(key), '-N', '-p', String(ctx.port), 'dev@127.0.0.1'], { stdio: ['ignore', 'ignore', 'ignore'] });
      children.push(child);
      return child;
    };
    const before = ctx.server.den.ssh.sessions(ctx.alice.workspaceId).length;
    const byRsa = hold(ctx.aliceRsaKey);
    const byEd25519 = hold(ctx.aliceKey);
    await waitUntil(() => ctx.server.den.ssh.sessions(ctx.alice.workspaceId).length === before + 2, 'both connections');
    const { keys } = (await getJson('/api/v1/users/me/keys')) as { keys: { id: string; type: string }[] };
    const rsa = keys.find((key) => key.type === 'ssh-rsa')!;
    const removed = await ctx.server.app.inject({ method: 'DELETE', url: `/api/v1/users/me/keys/${rsa.id}`, headers: { authorization: `Bearer ${ctx.aliceToken}` } });
    expect(removed.statusCode).toBe(200);
    await waitUntil(() => byRsa.exitCode !== null, 'the connection of the removed key to end');
    expect(byEd25519.exitCode).toBeNull();
    expect(ctx.server.den.ssh.sessions(ctx.alice.workspaceId)).toHaveLength(before + 1);
    // the removed key no longer signs in; the other still does
    expect((await ssh('dev', ['true'], { key: ctx.aliceRsaKey })).code).toBe(255);
    expect((await ssh('dev', ['echo still-in'])).stdout).toBe('still-in\n');
    await addSshKey(ctx.server.store.db, systemClock, ctx.alice.userId, { name: '', publicKey: readFileSync(`${ctx.aliceRsaKey}.pub`, 'utf8') });
  });

  describe('bad input', () => {
    it('drops a connection that sends garbage instead of SSH packets, and serves the next', async () => {
      const socket = connect(ctx.port, '127.0.0.1');
      socket.on('error', () => {});
      await new Promise((resolve) => socket.once('data', resolve)); // the server's ident line
      socket.write('SSH-2.0-garbage\r\n');
      socket.write(Buffer.alloc(256 * 1024, 0xff));
      await new Promise((resolve) => socket.once('close', resolve));
      expect((await ssh('dev', ['echo still-serving'])).stdout).toBe('still-serving\n');
    });

    it('drops a connection whose crafted packets are malformed (a 4 GiB length, a key exchange with nothing in common), well before the login grace, and serves the next', async () => {
      const kexinit = (names: string) => Buffer.concat([Buffer.from([20]), Buffer.alloc(16, 7), ...Array.from({ length: 10 }, () => sshString(names)), Buffer.from([0, 0, 0, 0, 0])]);
      for (const packet of [Buffer.from([0xff, 0xff, 0xff, 0xf0, 4, 1, 2, 3]), sshPacket(kexinit('none-such@example.com'))]) {
        const socket = connect(ctx.port, '127.0.0.1');
        socket.on('error', () => {});
        const closed = new Promise((resolve) => socket.once('close', () => resolve('closed')));
        await new Promise((resolve) => socket.once('data', resolve)); // the server's ident line
        socket.write('SSH-2.0-crafted\r\n');
        socket.write(packet);
        const grace = new Promise((resolve) => setTimeout(() => resolve('still open'), LOGIN_GRACE_MS / 2).unref());
        expect(await Promise.race([closed, grace])).toBe('closed');
        socket.destroy();
      }
      expect((await ssh('dev', ['echo still-serving'])).stdout).toBe('still-serving\n');
    });

    it('clamps huge terminal sizes (pty-req and window-change) to what the workspace takes, and the command runs', async () => {
      const HUGE = 0xffffffff;
      const client = await connectClient(ctx.aliceKey, 'dev');
      try {
        const run = (rows: number, cols: number, resize: boolean) => new Promise<string>((resolve, reject) => {
          client.exec('stty size; read line; stty size', { pty: { rows, cols, term: 'xterm' } }, (error, stream) => {
            if (error) return reject(error);
            let text = '';
            let answered = false;
            stream.on('data', (chunk: Buffer) => {
              text += chunk;
              if (answered || !text.includes('\n')) return;
              answered = true;
              if (resize) stream.setWindow(HUGE, HUGE, HUGE, HUGE);
              stream.write('go\n');
            });
            stream.on('close', () => resolve(text));
          });
        });
        expect((await run(HUGE, HUGE, false)).split('\r\n').filter((line) => /^\d+ \d+$/.test(line))).toEqual(['1000 1000', '1000 1000']);
        expect((await run(30, 100, true)).split('\r\n').filter((line) => /^\d+ \d+$/.test(line))).toEqual(['30 100', '1000 1000']);
      } finally {
        client.end();
      }
    });

    it('refuses a channel of a type it does not know, and the connection goes on', async () => {
      const client = await connectClient(ctx.aliceKey, 'dev');
      try {
        const refused = await openRawChannel(client, 'tun@openssh.com');
        expect(refused).toMatchObject({ reason: 3 }); // SSH_OPEN_UNKNOWN_CHANNEL_TYPE
        expect(await execOn(client, 'echo after-unknown')).toBe('after-unknown\n');
      } finally {
        client.end();
      }
    });

    it('drops a connection that never authenticates once the login grace is over', async () => {
      const socket = connect(ctx.port, '127.0.0.1');
      socket.on('error', () => {});
      const closed = new Promise((resolve) => socket.once('close', resolve));
      await new Promise((resolve) => socket.once('data', resolve)); // the server's ident line
      socket.write('SSH-2.0-silent\r\n');
      await closed;
    }, LOGIN_GRACE_MS + 10_000);

    it('refuses thousands of channels opened at once past the limit, one refusal each, and the connection goes on', async () => {
      const upstream = await listen(createServer((socket) => socket.end('x')));
      const client = await connectClient(ctx.aliceKey, 'dev');
      const attempts = 2_000;
      const refusals = new Set<string>();
      const outcomes = await Promise.all(Array.from({ length: attempts }, () => new Promise<'open' | 'refused'>((resolve) => {
        client.forwardOut('127.0.0.1', 1, '127.0.0.1', port(upstream), (error, channel) => {
          if (error) {
            refusals.add(`${(error as Error & { reason?: number }).reason} ${error.message}`);
            return resolve('refused');
          }
          channel.on('data', () => {});
          channel.on('close', () => {});
          resolve('open');
        });
      })));
      expect(outcomes.filter((outcome) => outcome === 'refused').length).toBeGreaterThanOrEqual(attempts - 20);
      expect(outcomes.filter((outcome) => outcome === 'open').length).toBeGreaterThan(0);
      // SSH_OPEN_ADMINISTRATIVELY_PROHIBITED with the limit in a sentence
      expect([...refusals]).toEqual(['1 (SSH) Channel open failure: This SSH connection has 20 channels open, the most den allows; close some sessions or forwarded connections and try again.']);
      // once the channels are gone, the same connection runs a command
      await waitUntil(() => (ctx.server.den.ssh.sessions(ctx.alice.workspaceId).find((entry) => entry.via === 'ssh')?.channels ?? 0) === 0, 'the channels to close');
      expect(await execOn(client, 'echo after-the-flood')).toBe('after-the-flood\n');
      client.end();
    });

    it('refuses a forward (local or remote) into a stopped workspace and counts no channel for it', async () => {
      const client = await connectClient(ctx.aliceKey, 'off');
      const refused = await new Promise<Error | undefined>((resolve) => client.forwardOut('127.0.0.1', 1, '127.0.0.1', 22, (error) => resolve(error)));
      expect(refused).toBeInstanceOf(Error);
      const refusedRemote = await new Promise<Error | undefined>((resolve) => client.forwardIn('127.0.0.1', 0, (error) => resolve(error)));
      expect(refusedRemote).toBeInstanceOf(Error);
      expect(ctx.server.den.ssh.sessions(ctx.stopped.workspaceId)).toEqual([expect.objectContaining({ user: 'alice', channels: 0 })]);
      client.end();
    });

    it('refuses a forward to a port nothing listens on, and an unknown subsystem, without ending the connection', async () => {
      const client = await connectClient(ctx.aliceKey, 'dev');
      const closed = await freePort();
      const refused = await new Promise<(Error & { reason?: number }) | undefined>((resolve) => client.forwardOut('127.0.0.1', 1, '127.0.0.1', closed, (error) => resolve(error)));
      expect(refused?.reason).toBe(2); // SSH_OPEN_CONNECT_FAILED
      expect(refused?.message).toBe(`(SSH) Channel open failure: Nothing listens on 127.0.0.1:${closed} in the workspace; start the program that should serve it, or check the port.`);
      const subsystem = await new Promise<Error | undefined>((resolve) => client.subsys('no-such-subsystem', (error) => resolve(error)));
      expect(subsystem).toBeInstanceOf(Error);
      const output = await new Promise<string>((resolve, reject) => {
        client.exec('echo alive', (error, stream) => {
          if (error) return reject(error);
          let text = '';
          stream.on('data', (chunk: Buffer) => (text += chunk));
          stream.on('close', () => resolve(text));
        });
      });
      expect(output).toBe('alive\n');
      client.end();
    });
  });

  async function connectClient(key: string, username: string): Promise<ssh2.Client> {
    const client = new ssh2.Client();
    await new Promise<void>((resolve, reject) => {
      client.once('ready', () => resolve());
      client.once('error', reject);
      client.connect({ host: '127.0.0.1', port: ctx.port, username, privateKey: readFileSync(key) });
    });
    return client;
  }

  /** `ssh -A` with the agent at `agentSocket` (OpenSSH asks for no forwarding with IdentityAgent=none). */
  const sshWithAgent = (agentSocket: string, command: string): Promise<RunResult> =>
    run('ssh', [...isolatedOptions(ctx.aliceKey).map((option) => (option === 'IdentityAgent=none' ? `IdentityAgent=${agentSocket}` : option)), '-A', '-p', String(ctx.port), 'dev@127.0.0.1', command]);

  /** Starts an ssh-agent (killed after the test) holding `key`; returns its socket. */
  async function startSshAgentWith(key: string): Promise<string> {
    const dir = mkdtempSync(join(tmpdir(), 'den-ssh-agent-'));
    dirs.push(dir);
    const socket = join(dir, 'agent.sock');
    children.push(spawn('ssh-agent', ['-D', '-a', socket], { stdio: 'ignore' }));
    await waitUntil(() => existsSync(socket), 'ssh-agent to listen');
    expect((await run('ssh-add', ['-q', key], { env: { ...process.env, SSH_AUTH_SOCK: socket } })).code).toBe(0);
    return socket;
  }

  /** Runs `body` with alice's workspace on a new version of its template whose document is `spec`, as after an update; then back. */
  async function withTemplate(spec: object, body: () => Promise<void>): Promise<void> {
    const db = ctx.server.store.db;
    const workspace = await db.selectFrom('workspaces').select(['template_id', 'template_version_id']).where('id', '=', ctx.alice.workspaceId).executeTakeFirstOrThrow();
    const versionId = randomUUID();
    const number = Number((await db.selectFrom('template_versions').select((eb) => eb.fn.max('number').as('n')).where('template_id', '=', workspace.template_id).executeTakeFirstOrThrow()).n) + 1;
    await db.insertInto('template_versions')
      .values({ id: versionId, template_id: workspace.template_id, number, spec_json: JSON.stringify(spec), files_json: '{}', message: '', created_by: ctx.alice.userId, created_at: new Date().toISOString() })
      .execute();
    await db.updateTable('workspaces').set({ template_version_id: versionId }).where('id', '=', ctx.alice.workspaceId).execute();
    try {
      await body();
    } finally {
      await db.updateTable('workspaces').set({ template_version_id: workspace.template_version_id }).where('id', '=', ctx.alice.workspaceId).execute();
    }
  }

  async function getJson(url: string) {
    const response = await ctx.server.app.inject({ url, headers: { authorization: `Bearer ${ctx.aliceToken}` } });
    expect(response.statusCode).toBe(200);
    return response.json();
  }

  /** ssh with a forward; `exitOnFailure: false` keeps it running past a refused forward. It logs at INFO: allocated ports and refused forwards show on stderr. */
  function startForward(args: string[], { exitOnFailure = true } = {}): ChildProcess {
    const options = isolatedOptions(ctx.aliceKey, ['-o', `ExitOnForwardFailure=${exitOnFailure ? 'yes' : 'no'}`]).map((option) => (option === 'LogLevel=ERROR' ? 'LogLevel=INFO' : option));
    const child = spawn('ssh', [...options, '-p', String(ctx.port), ...args, 'dev@127.0.0.1'], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    return child;
  }

  async function listen(server: Server, path?: string): Promise<Server> {
    servers.push(server);
    await new Promise<void>((resolve) => (path ? server.listen(path, resolve) : server.listen(0, '127.0.0.1', resolve)));
    return server;
  }
});

const DEN_BIN = join(import.meta.dirname, '..', 'bin', 'den.js');

async function waitUntil(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function port(server: Server): number {
  return (server.address() as AddressInfo).port;
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const free = port(probe);
  await new Promise((resolve) => probe.close(resolve));
  return free;
}

/** Connects to a forward (a local port or unix socket) once ssh has opened it (it listens only after authenticating). */
async function connectWhenUp(localPort: number | string, forward?: ChildProcess): Promise<Socket> {
  const deadline = Date.now() + FORWARD_TIMEOUT_MS;
  for (;;) {
    if (forward && forward.exitCode !== null) throw new Error(`the ssh forward exited with ${forward.exitCode}`);
    const socket = await new Promise<Socket | undefined>((resolve) => {
      const attempt = typeof localPort === 'string' ? connect(localPort) : connect(localPort, '127.0.0.1');
      attempt.once('connect', () => resolve(attempt));
      attempt.once('error', () => resolve(undefined));
    });
    if (socket) return socket;
    if (Date.now() > deadline) throw new Error(`the forward on port ${localPort} did not open within ${FORWARD_TIMEOUT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Runs a command on an ssh2 client connection; resolves with its stdout. */
function execOn(client: ssh2.Client, command: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    client.exec(command, (error, stream) => {
      if (error) return reject(error);
      let text = '';
      stream.on('data', (chunk: Buffer) => (text += chunk));
      stream.on('close', () => resolve(text));
    });
  });
}

/** An SSH string (RFC 4251): u32 length, bytes. */
function sshString(text: string): Buffer {
  const bytes = Buffer.from(text);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(bytes.length);
  return Buffer.concat([length, bytes]);
}

/** An unencrypted SSH binary packet (RFC 4253 6): u32 length, padding length, payload, padding to a multiple of 8. */
function sshPacket(payload: Buffer): Buffer {
  let padding = 8 - ((5 + payload.length) % 8);
  if (padding < 4) padding += 8;
  const header = Buffer.alloc(5);
  header.writeUInt32BE(1 + payload.length + padding);
  header[4] = padding;
  return Buffer.concat([header, payload, Buffer.alloc(padding)]);
}

/**
 * Sends CHANNEL_OPEN of any type on an authenticated ssh2 client (it has no public call for types
 * it does not know): the packet goes through its transport, encrypted, with a channel id from its
 * own channel manager. Resolves with the server's refusal ({ reason, description }), or null when
 * the server opened the channel. Uses ssh2 internals (1.17, pinned).
 */
function openRawChannel(client: ssh2.Client, type: string): Promise<{ reason: number; description: string } | null> {
  const internals = client as unknown as {
    _protocol: { _packetRW: { write: { allocStart: number; alloc(size: number): Buffer; finalize(packet: Buffer): Buffer } } };
    _chanMgr: { add(callback: (error: (Error & { reason: number; description: string }) | undefined) => void): number };
  };
  const { sendPacket } = createRequire(import.meta.url)('ssh2/lib/protocol/utils.js') as { sendPacket(protocol: unknown, packet: Buffer): void };
  return new Promise((resolve) => {
    const local = internals._chanMgr.add((error) => resolve(error ? { reason: error.reason, description: error.description } : null));
    const protocol = internals._protocol;
    const body = Buffer.concat([Buffer.from([90]), sshString(type), Buffer.from([0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0x80, 0])]);
    body.writeUInt32BE(local, 1 + 4 + Buffer.byteLength(type));
    const packet = protocol._packetRW.write.alloc(body.length);
    body.copy(packet, protocol._packetRW.write.allocStart);
    sendPacket(protocol, protocol._packetRW.write.finalize(packet));
  });
}

/** True when nothing listens on the port any more. */
function refusedAt(localPort: number): Promise<boolean> {
  return new Promise((resolve) => {
    const attempt = connect(localPort, '127.0.0.1');
    attempt.once('connect', () => {
      attempt.destroy();
      resolve(false);
    });
    attempt.once('error', () => resolve(true));
  });
}

async function waitUntilAsync(condition: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Resolves with the match once the child's stderr shows the pattern (ssh prints allocated ports and forward failures there). */
function stderrMatching(child: ChildProcess, pattern: RegExp): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`ssh did not print ${pattern} within ${FORWARD_TIMEOUT_MS} ms; it printed: ${text}`)), FORWARD_TIMEOUT_MS);
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (chunk: string) => {
      text += chunk;
      const match = text.match(pattern);
      if (match) {
        clearTimeout(timer);
        resolve(match);
      }
    });
  });
}

function readFrom(socket: Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('error', () => {});
    socket.on('close', () => resolve(text));
    socket.resume();
  });
}

/** Sends a SOCKS5 CONNECT by host name (RFC 1928) without authentication; the reply (10 bytes, code at [1]) and the stream follow on the socket. */
async function socks5Connect(socket: Socket, host: string, targetPort: number): Promise<void> {
  socket.write(Buffer.from([5, 1, 0]));
  const greeting = await new Promise<Buffer>((resolve) => socket.once('data', resolve));
  if (greeting.length !== 2 || greeting[1] !== 0) throw new Error('the SOCKS server wants authentication');
  const name = Buffer.from(host);
  socket.write(Buffer.concat([Buffer.from([5, 1, 0, 3, name.length]), name, Buffer.from([targetPort >> 8, targetPort & 0xff])]));
}
