import { connect, createServer, type AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { stringify } from 'yaml';
import { waitFor } from '../agent/terminal/testing.ts';
import { openExec } from '../client/exec.ts';
import { openTerminal } from '../client/terminal.ts';
import { AGENT_CLOSE, decodeFrame, encodeFrame, DEFAULT_CHANNEL_WINDOW, type AgentFrame } from '../protocol/agent.ts';
import { RELAY_PROTOCOL_HEADER, RELAY_REPLICA_HEADER } from '../protocol/relay.ts';
import { agentKey } from '../server/agents/hub-types.ts';
import { listenInWorkspace } from '../server/agents/tcp-listen.ts';
import { issueAgentToken } from '../server/agents/tokens.ts';
import { connectFakeAgent } from './support/fake-agent.ts';
import { serverMessage } from './support/frame-arbitraries.ts';
import { seedWorkspace } from './support/workspace-seed.ts';
import { postgresSkipReason } from './support/postgres.ts';
import { startTestServer, unsandboxedProcessDriver, type TestServer } from './support/harness.ts';
import { waitForWorkspaceReady } from './support/templates.ts';
import { api, createUserWithToken, setupOwner, type TestUser } from './support/users.ts';

/**
 * Two den servers on one PostgreSQL database, in this process: B runs the builds, so it starts
 * the agent and holds its connection, and every exec and terminal a user opens on A crosses the
 * replica relay; a readiness wait on A ends when B's agent reports ready. The relay's edge is
 * tested with raw sockets: who may dial it, and that a peer's bad frame costs one channel.
 */

const READY_TIMEOUT_MS = 30_000;
const CONDITION_TIMEOUT_MS = 10_000;
const FUZZ_SEED = Number(process.env.DEN_FUZZ_SEED ?? 20261206);
/** Cases of up to 20 frames each; each case opens real processes in the workspace, so not many. */
const FUZZ_RUNS = Number(process.env.DEN_FUZZ_RUNS ?? 100);
/** What fuzzed exec and terminal channels may run in the workspace: harmless, and quick or waiting for input. */
const SAFE_COMMANDS = [['true'], ['cat'], ['echo', 'x'], ['sh', '-c', 'exit 3']];

if (postgresSkipReason) console.warn(`[skip] the replica relay: ${postgresSkipReason}`);

describe.skipIf(postgresSkipReason !== undefined)('the replica relay', { timeout: 60_000 }, () => {
  let a: TestServer;
  let b: TestServer;
  let alice: TestUser;
  let workspaceId: string;

  beforeAll(async () => {
    b = await startTestServer({ dialect: 'postgres', listen: true, driver: unsandboxedProcessDriver });
    a = await startTestServer({ databaseUrl: b.config.databaseUrl, listen: true, startWorkers: false, driver: unsandboxedProcessDriver });
    const owner = await setupOwner(a.app);
    alice = await createUserWithToken(a.app, owner.token, 'member', 'alice');
    const pushed = await api(a.app, owner.token).post('/api/v1/templates', { files: { 'template.yaml': stringify({ name: 'relayed', workspace: { image: 'den/base' } }) }, activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    const created = await api(a.app, alice.token).post('/api/v1/workspaces', { name: 'far', template: 'relayed' });
    expect(created.status, JSON.stringify(created.json)).toBe(202);
    workspaceId = created.json.workspace?.id ?? created.json.id;
    // A waits for the agent B starts: through the store and the bus, with nothing of it in A
    const build = await a.store.db.selectFrom('builds').select('id').where('workspace_id', '=', workspaceId).executeTakeFirstOrThrow();
    await a.den.agents.waitForReady(workspaceId, build.id, { timeoutMs: READY_TIMEOUT_MS });
    await waitForWorkspaceReady(api(a.app, alice.token), 'alice', 'far', READY_TIMEOUT_MS);
  });
  afterAll(async () => {
    // A first: B created the database and drops it on close
    await a?.close();
    await b?.close();
  });

  it('records B as the agent\'s holder, and A hears of it', async () => {
    expect(b.den.localAgents.isConnected(workspaceId)).toBe(true);
    expect(a.den.localAgents.isConnected(workspaceId)).toBe(false);
    const location = await a.store.db.selectFrom('agent_locations').selectAll().where('agent_key', '=', agentKey(workspaceId)).executeTakeFirstOrThrow();
    expect(location.replica_id).toBe(b.den.replicas.id);
    // A's directory heard it over NOTIFY: the routes' "is it connected" answers yes on A
    await waitFor(() => a.den.agents.isConnected(workspaceId), CONDITION_TIMEOUT_MS, 'A to learn that B holds the agent');
  });

  it('runs `den exec` through A with stdin, stdout, stderr and the exit code', async () => {
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    stdout.on('data', (chunk: Buffer) => out.push(chunk));
    stderr.on('data', (chunk: Buffer) => err.push(chunk));
    const stdin = new PassThrough();
    stdin.end('through the relay\n');
    const code = await openExec({
      baseUrl: a.url!, token: alice.token, owner: 'alice', workspace: 'far',
      command: ['sh', '-c', 'cat; echo oops >&2; exit 7'], stdin, stdout, stderr,
    });
    expect(code).toBe(7);
    expect(Buffer.concat(out).toString()).toBe('through the relay\n');
    expect(Buffer.concat(err).toString()).toBe('oops\n');
  });

  it('keeps flow control end to end: a reader that stops holds one window on A and the command waits', async () => {
    const session = await a.den.agents.exec(workspaceId, { command: ['cat', '/dev/zero'] });
    session.stdio.pause();
    // the agent sends one window and waits for credit; nothing more piles up on A
    await waitFor(() => session.stdio.readableLength >= DEFAULT_CHANNEL_WINDOW / 8, CONDITION_TIMEOUT_MS, 'output to arrive');
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(session.stdio.readableLength).toBeLessThanOrEqual(DEFAULT_CHANNEL_WINDOW);
    // and it flows again once read
    let read = 0;
    session.stdio.on('data', (chunk: Buffer) => (read += chunk.byteLength));
    session.stdio.resume();
    await waitFor(() => read > 8 * DEFAULT_CHANNEL_WINDOW, CONDITION_TIMEOUT_MS, 'output to flow again');
    session.kill('SIGKILL');
    expect(await session.exit).toBe(137);
  });

  it('attaches a terminal through A, and reattaches to the same session', async () => {
    const output: string[] = [];
    const first = await openTerminal({
      baseUrl: a.url!, token: alice.token, owner: 'alice', workspace: 'far', cols: 80, rows: 24,
      onOutput: (data, consumed) => { output.push(Buffer.from(data).toString()); consumed(); },
    });
    first.input('echo relayed-$((6*7))\r');
    await waitFor(() => output.join('').includes('relayed-42'), CONDITION_TIMEOUT_MS, 'the shell to echo through the relay');
    first.detach();
    await first.ended;

    let snapshot = '';
    const again = await openTerminal({
      baseUrl: a.url!, token: alice.token, owner: 'alice', workspace: 'far', cols: 80, rows: 24, sessionId: first.attached.sessionId,
      onAttached: (attached) => (snapshot = attached.snapshot),
      onOutput: (_data, consumed) => consumed(),
    });
    expect(again.attached.sessionId).toBe(first.attached.sessionId);
    expect(snapshot).toContain('relayed-42');
    again.closeSession();
    expect((await again.ended).reason).toBe('exit');
  });

  it('listens in the workspace through A (SSH -R): a connection made there is claimed through the relay, and closing stops the listener', async () => {
    const listener = await listenInWorkspace(a.den.agents, workspaceId, { host: '127.0.0.1', port: 0 }, (accepted, claim) => {
      void claim().then((tcp) => {
        tcp.stdio.on('data', (chunk: Buffer) => tcp.stdio.end(`relayed:${chunk}`));
      });
    });
    expect(listener.port).toBeGreaterThan(0);
    // the agent is a process on this machine: its workspace loopback is ours
    const socket = connect(listener.port!, '127.0.0.1');
    socket.write('hello');
    const reply = await new Promise<string>((resolve, reject) => {
      let text = '';
      socket.on('data', (chunk: Buffer) => (text += chunk));
      socket.once('close', () => resolve(text));
      socket.once('error', reject);
    });
    expect(reply).toBe('relayed:hello');
    listener.close();
    await waitForAsync(() => new Promise<boolean>((resolve) => {
      const probe = connect(listener.port!, '127.0.0.1');
      probe.once('connect', () => (probe.destroy(), resolve(false)));
      probe.once('error', () => resolve(true));
    }), 'the listener to stop');
  });

  it('refuses a listen on a port taken in the workspace with the agent\'s sentence, through A', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as AddressInfo).port;
    await expect(listenInWorkspace(a.den.agents, workspaceId, { host: '127.0.0.1', port }, () => {})).rejects.toMatchObject({ code: 'TCP_LISTEN_FAILED', message: expect.stringContaining('already listens') });
    taken.close();
  });

  it('refuses a relay dial without a live replica\'s secret, and a user\'s token', async () => {
    const dial = (headers: Record<string, string>) => refusal(`${b.url!.replace('http', 'ws')}/api/v1/replicas/relay?agent=${workspaceId}`, headers);
    expect(await dial({})).toEqual({ status: 401, code: 'REPLICA_UNAUTHORIZED' });
    expect(await dial({ authorization: `Bearer ${alice.token}` })).toEqual({ status: 401, code: 'REPLICA_UNAUTHORIZED' });
    expect(await dial({ authorization: `Bearer ${alice.token}`, [RELAY_REPLICA_HEADER]: a.den.replicas.id, [RELAY_PROTOCOL_HEADER]: '1.0' })).toEqual({ status: 401, code: 'REPLICA_UNAUTHORIZED' });
    expect(await dial({ authorization: `Bearer ${a.den.replicas.secret}`, [RELAY_REPLICA_HEADER]: a.den.replicas.id, [RELAY_PROTOCOL_HEADER]: '2.0' })).toEqual({ status: 400, code: 'RELAY_PROTOCOL_UNSUPPORTED' });
    // the store keeps a hash only
    const row = await a.store.db.selectFrom('replicas').select('secret_hash').where('id', '=', a.den.replicas.id).executeTakeFirstOrThrow();
    expect(row.secret_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(row.secret_hash).not.toContain(a.den.replicas.secret);
  });

  it('closes only the channel a peer replica overruns or over-grants, and shrugs off a garbled frame', async () => {
    const relay = await dialRelay(b.url!, a, workspaceId);
    try {
      relay.send({ type: 'open', channel: 1, window: DEFAULT_CHANNEL_WINDOW, spec: { kind: 'exec', command: ['cat'] } });
      relay.send({ type: 'open', channel: 3, window: DEFAULT_CHANNEL_WINDOW, spec: { kind: 'exec', command: ['cat'] } });
      const opened = await relay.next((frame) => frame.type === 'open_ok' && frame.channel === 1);
      await relay.next((frame) => frame.type === 'open_ok' && frame.channel === 3);
      const credit = (opened as { window: number }).window;
      // more than the agent's window on channel 1 in one go
      for (let sent = 0; sent <= credit; sent += 65_536) relay.send({ type: 'data', channel: 1, payload: new Uint8Array(65_536) });
      const closed = await relay.next((frame) => frame.type === 'close' && frame.channel === 1);
      expect(closed).toMatchObject({ error: { code: 'FLOW_CONTROL_VIOLATION' } });
      relay.raw('{"type":"nonsense"');
      relay.raw(new Uint8Array([0x7f, 0, 0, 0, 9]));
      // channel 3 still echoes
      relay.send({ type: 'data', channel: 3, payload: new TextEncoder().encode('still here\n') });
      const echoed = await relay.next((frame) => frame.type === 'data' && frame.channel === 3);
      expect(Buffer.from((echoed as { payload: Uint8Array }).payload).toString()).toBe('still here\n');
      // granting back more than it received would let the agent fill B's send buffer: that channel goes too
      relay.send({ type: 'window', channel: 3, bytes: 1_000_000 });
      expect(await relay.next((frame) => frame.type === 'close' && frame.channel === 3)).toMatchObject({ error: { code: 'FLOW_CONTROL_VIOLATION' } });
      // and the socket still opens channels
      relay.send({ type: 'open', channel: 5, window: DEFAULT_CHANNEL_WINDOW, spec: { kind: 'exec', command: ['true'] } });
      expect(await relay.next((frame) => frame.type === 'close' && frame.channel === 5)).toMatchObject({ exitCode: 0 });
    } finally {
      relay.close();
    }
  });

  it('keeps one connection per agent across replicas: a connection to A replaces the one to B, which then says nothing of presence', async () => {
    const seeded = await seedWorkspace(a.store.db, { username: 'carol', workspaceName: 'twice' });
    const token = await issueAgentToken(a.store.db, { workspaceId: seeded.workspaceId, buildId: seeded.buildId, manifest: {}, now: new Date() });
    const location = async () => (await a.store.db.selectFrom('agent_locations').select('replica_id').where('agent_key', '=', agentKey(seeded.workspaceId)).executeTakeFirst())?.replica_id;
    const disconnectedAt = async () => (await a.store.db.selectFrom('agents').select('disconnected_at').where('workspace_id', '=', seeded.workspaceId).where('name', '=', 'main').executeTakeFirstOrThrow()).disconnected_at;

    const first = await connectFakeAgent(b.url!, token);
    await waitForAsync(async () => (await location()) === b.den.replicas.id, 'B to record the first connection');
    const second = await connectFakeAgent(a.url!, token);
    expect(await first.closed).toBe(AGENT_CLOSE.replaced);
    await waitForAsync(async () => (await location()) === a.den.replicas.id, 'A to record the second connection');
    // B's closed connection did not mark the agent disconnected: it is connected, to A
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await disconnectedAt()).toBeNull();
    expect(a.den.localAgents.isConnected(seeded.workspaceId)).toBe(true);
    expect(b.den.localAgents.isConnected(seeded.workspaceId)).toBe(false);

    second.close();
    await waitForAsync(async () => (await disconnectedAt()) !== null && (await location()) === undefined, 'A to record the agent gone');
  });

  it(`keeps relaying through ${FUZZ_RUNS} fuzzed cases of what a peer replica may send (seed ${FUZZ_SEED})`, async () => {
    const crashes: unknown[] = [];
    const recordCrash = (error: unknown) => crashes.push(error);
    process.on('uncaughtException', recordCrash);
    process.on('unhandledRejection', recordCrash);
    let relay = await dialRelay(b.url!, a, workspaceId);
    const closeCodes: number[] = [];
    try {
      let nextChannel = 1;
      let barrierId = 0;
      await fc.assert(fc.asyncProperty(fc.array(serverMessage(SAFE_COMMANDS), { minLength: 1, maxLength: 20 }), async (messages) => {
        // past 100 frames it cannot decode, B closes the socket (4004), as the agent link does: dial again
        const code = relay.closedWith();
        if (code !== undefined) {
          closeCodes.push(code);
          relay = await dialRelay(b.url!, a, workspaceId);
          nextChannel = 1;
        }
        const opened: number[] = [];
        // ref -1 is a new channel; others name the channels this case opened, newest first
        const channel = (ref: number) => {
          if (ref < 0 || opened.length === 0) {
            opened.push(nextChannel);
            nextChannel += 2;
            return opened.at(-1)!;
          }
          return opened[opened.length - 1 - (ref % opened.length)];
        };
        for (const message of messages) relay.raw(message.build(channel));
        for (const id of opened) relay.send({ type: 'close', channel: id });
        // B answers a ping after everything before it: the case is through
        const id = ++barrierId;
        relay.send({ type: 'ping', id });
        await relay.next((frame) => frame.type === 'pong' && frame.id === id, { orClose: true });
        relay.drop();
      }), { seed: FUZZ_SEED, numRuns: FUZZ_RUNS });
      // a peer's frames close the socket only with the agent link's protocol-error code, never 1011 INTERNAL
      expect(closeCodes.filter((code) => code !== AGENT_CLOSE.protocolError)).toEqual([]);
    } finally {
      relay.close();
      process.off('uncaughtException', recordCrash);
      process.off('unhandledRejection', recordCrash);
    }
    expect(crashes).toEqual([]);
    expect((await b.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    const session = await a.den.agents.exec(workspaceId, { command: ['echo', 'after the fuzz'] });
    const out: Buffer[] = [];
    session.stdio.on('data', (chunk: Buffer) => out.push(chunk));
    expect(await session.exit).toBe(0);
    await waitFor(() => Buffer.concat(out).toString() === 'after the fuzz\n', CONDITION_TIMEOUT_MS, 'the exec\'s output');
  });
});

async function waitForAsync(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + CONDITION_TIMEOUT_MS;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`Timed out after ${CONDITION_TIMEOUT_MS} ms waiting for ${what}.`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function refusal(url: string, headers: Record<string, string>): Promise<{ status: number; code: string }> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers });
    socket.once('open', () => reject(new Error('the relay accepted the dial')));
    socket.once('error', () => undefined);
    socket.once('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode!, code: (JSON.parse(body) as { error: { code: string } }).error.code }));
    });
  });
}

/** A raw relay socket with replica A's credentials, as A's relay client would open it. */
async function dialRelay(url: string, from: TestServer, agentKey: string) {
  const socket = new WebSocket(`${url.replace('http', 'ws')}/api/v1/replicas/relay?agent=${agentKey}`, {
    headers: { authorization: `Bearer ${from.den.replicas.secret}`, [RELAY_REPLICA_HEADER]: from.den.replicas.id, [RELAY_PROTOCOL_HEADER]: '1.0' },
  });
  const frames: AgentFrame[] = [];
  const waiters: (() => void)[] = [];
  let closeCode: number | undefined;
  socket.on('message', (data: Buffer, isBinary: boolean) => {
    frames.push(decodeFrame(isBinary ? new Uint8Array(data) : data.toString()));
    for (const wake of waiters.splice(0)) wake();
  });
  socket.on('close', (code: number) => {
    closeCode = code;
    for (const wake of waiters.splice(0)) wake();
  });
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  return {
    send: (frame: AgentFrame) => socket.send(encodeFrame(frame)),
    raw: (message: string | Uint8Array) => socket.send(message),
    close: () => socket.close(),
    /** forgets the frames received so far */
    drop: () => void frames.splice(0),
    closedWith: () => closeCode,
    /** The first frame that matches; with `orClose`, undefined once the socket closed without one. */
    async next(match: (frame: AgentFrame) => boolean, options: { orClose?: boolean } = {}): Promise<AgentFrame> {
      const deadline = Date.now() + CONDITION_TIMEOUT_MS;
      for (;;) {
        const index = frames.findIndex(match);
        if (index >= 0) return frames.splice(index, 1)[0];
        if (options.orClose && closeCode !== undefined) return undefined as unknown as AgentFrame;
        if (Date.now() > deadline) throw new Error(`no matching relay frame; got ${frames.map((f) => f.type).join(', ')}`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 200);
        });
      }
    },
  };
}
