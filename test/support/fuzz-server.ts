import fc from 'fast-check';
import type { AgentFrame } from '../../protocol/agent.ts';
import { errorEnvelopeSchema } from '../../protocol/errors.ts';
import { TERMINAL_CLOSE } from '../../protocol/terminal.ts';
import { createApiToken } from '../../server/auth/api-tokens.ts';
import { issueAgentToken } from '../../server/agents/tokens.ts';
import { systemClock } from '../../server/store/time.ts';
import { connectFakeAgent, type FakeAgent } from './fake-agent.ts';
import { agentMessage, execClientMessage, terminalClientMessage, type LinkMessage } from './frame-arbitraries.ts';
import { startTestServer, type TestServer } from './harness.ts';
import { idleDriver } from './idle-driver.ts';
import { closedWithin, openUserSocket, SOCKET_TIMEOUT_MS, type RecordedSocket } from './sockets.ts';
import { seedWorkspace, type SeededWorkspace } from './workspace-seed.ts';

/**
 * The den server under frame fuzzing: a real server on loopback, a member with an API token, and
 * a fake agent over a real websocket that answers the server's channel opens (or not) as each
 * case says. Shared by the suite (test/fuzz-frames.test.ts) and the long run (`npm run fuzz`).
 */
export interface ServerFuzzWorld {
  server: TestServer;
  workspace: SeededWorkspace;
  userToken: string;
  agent: FakeAgent;
  /** exceptions that escaped to the process while the world ran (each would have stopped den), and channels closed with INTERNAL */
  crashes: unknown[];
  targets: FuzzTarget<any>[];
  /** how the fake agent answers the server's channel opens from now on */
  answerOpens(answer: OpenAnswer): void;
  close(): Promise<void>;
}

export interface FuzzTarget<T> {
  name: string;
  arbitrary: fc.Arbitrary<T>;
  /** runs one case; throws when the property does not hold */
  run(input: T): Promise<void>;
}

/** How the fake agent answers the server's `open` frames during one case. */
export type OpenAnswer = 'ok' | 'error' | 'silent';

/** Close codes a terminal socket may end with; 1011 (INTERNAL) means a handler threw, 1006 that the server vanished. */
const TERMINAL_CODES = new Set<number>([...Object.values(TERMINAL_CLOSE), 1000, 1001]);
/** Close codes of the exec socket: 1000 after `exit`, 4000 after an `error`. */
const EXEC_CODES = new Set<number>([1000, 1001, 4000]);
/** Commands a fuzzed exec may ask the (fake) agent for; nothing runs them, but keep them harmless anyway. */
const SAFE_COMMANDS = [['true'], ['cat'], ['echo', 'x']];

export async function startServerFuzzWorld(): Promise<ServerFuzzWorld> {
  const crashes: unknown[] = [];
  const recordCrash = (error: unknown) => crashes.push(error);
  process.on('uncaughtException', recordCrash);
  process.on('unhandledRejection', recordCrash);

  const server = await startTestServer({ listen: true, startWorkers: false, driver: () => idleDriver });
  const workspace = await seedWorkspace(server.store.db, { username: 'fuzzer', workspaceName: 'target' });
  const userToken = (await createApiToken(server.store.db, systemClock, workspace.userId, { name: 'fuzz' })).token;
  const agentToken = await issueAgentToken(server.store.db, { workspaceId: workspace.workspaceId, buildId: workspace.buildId, manifest: {}, now: new Date() });

  let answer: OpenAnswer = 'ok';
  /** channels the server opened on the fake agent, newest last: fuzzed frames name them */
  const opened: number[] = [];
  let opens = 0;
  const autopilot = (agent: FakeAgent) => (frame: AgentFrame) => {
    // the server closes a channel with INTERNAL only when one of its handlers threw: contained, but a bug
    if (frame.type === 'close' && frame.error?.code === 'INTERNAL') crashes.push(new Error(`The server closed channel ${frame.channel} with INTERNAL: a handler threw (see the server log).`));
    if (frame.type !== 'open') return;
    opens++;
    opened.push(frame.channel);
    if (opened.length > 16) opened.shift();
    if (answer === 'ok') agent.send({ type: 'open_ok', channel: frame.channel, window: 256 * 1024 });
    if (answer === 'error') agent.send({ type: 'open_error', channel: frame.channel, code: 'EXEC_FAILED', message: 'fuzz says no' });
  };
  const connect = async () => {
    const agent = await connectFakeAgent(server.url!, agentToken);
    agent.onFrame = autopilot(agent);
    return agent;
  };
  const world: ServerFuzzWorld = {
    server,
    workspace,
    userToken,
    agent: await connect(),
    crashes,
    targets: [],
    answerOpens: (next) => (answer = next),
    async close() {
      world.agent.close();
      await server.close();
      process.off('uncaughtException', recordCrash);
      process.off('unhandledRejection', recordCrash);
    },
  };

  const path = (socket: 'terminal' | 'exec') => `/api/v1/workspaces/${workspace.username}/${workspace.workspaceName}/${socket}`;
  /** The agent link after a case: still up, or closed by the server for a reason it gave (then a new agent connects). */
  const settleAgent = async () => {
    const closedAlready = await Promise.race([world.agent.closed, Promise.resolve(undefined)]);
    if (closedAlready === undefined) {
      try {
        await world.agent.barrier();
        return;
      } catch (error) {
        if ((await Promise.race([world.agent.closed, Promise.resolve(undefined)])) === undefined) throw error;
      }
    }
    const code = await world.agent.closed;
    if (code !== 4004 && code !== 4003) throw new Error(`The server closed the agent link with ${code}, not 4004 (protocol error).`);
    world.agent = await connect();
  };
  /** Fails the case for crashes recorded since `since` (not earlier ones, so shrinking finds the case that crashed). */
  const expectServing = async (since: number) => {
    const crash = crashes[since];
    if (crash !== undefined) throw new Error(`An exception escaped to the process (it would have stopped den): ${String((crash as Error)?.stack ?? crash)}`);
    const health = await server.app.inject({ method: 'GET', url: '/healthz' });
    if (health.statusCode !== 200) throw new Error(`/healthz answered ${health.statusCode}.`);
  };

  /** Sends `messages` on a fresh user socket, then closes it unless the server did; checks how it ended. */
  const userCase = async (socketPath: string, messages: (string | Uint8Array)[], allowed: Set<number>) => {
    const user: RecordedSocket = await openUserSocket(server.url!, socketPath, userToken);
    let serverClosed = false;
    void user.closed.then(() => (serverClosed = !closing));
    let closing = false;
    for (const message of messages) {
      if (user.socket.readyState !== user.socket.OPEN) break;
      user.socket.send(message);
    }
    // a websocket ping is answered after every earlier message was handled (or not at all while
    // the server holds the socket paused for backpressure: then the close below has its own timeout)
    await new Promise<void>((resolve) => {
      if (user.socket.readyState !== user.socket.OPEN) return resolve();
      const timer = setTimeout(resolve, SOCKET_TIMEOUT_MS);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      user.socket.once('pong', done);
      user.socket.once('close', done);
      user.socket.ping();
    });
    await world.agent.barrier().catch(() => undefined);
    closing = true;
    if (user.socket.readyState === user.socket.OPEN) user.socket.close(1000, 'fuzz case done');
    const { code, reason } = await closedWithin(user.closed);
    if (serverClosed && !allowed.has(code)) throw new Error(`The server closed ${socketPath} with ${code} ${reason}; texts: ${JSON.stringify(user.texts).slice(0, 500)}`);
    for (const text of user.texts) {
      const parsed = JSON.parse(text) as { type?: string; code?: unknown; error?: { code?: unknown } };
      if (parsed.type === 'error' && typeof (parsed.code ?? parsed.error?.code) !== 'string') throw new Error(`An error message without a code: ${text}`);
    }
  };

  const openAnswer = fc.constantFrom<OpenAnswer>('ok', 'ok', 'error', 'silent');
  world.targets.push(
    {
      name: 'terminal socket',
      arbitrary: fc.record({ answer: openAnswer, messages: fc.array(terminalClientMessage, { minLength: 1, maxLength: 8 }) }),
      async run({ answer: given, messages }) {
        const since = crashes.length;
        answer = given === 'silent' ? 'ok' : given; // a silent agent would hold each case for the 10 s open timeout
        await userCase(path('terminal'), messages, TERMINAL_CODES);
        await settleAgent();
        await expectServing(since);
      },
    } satisfies FuzzTarget<{ answer: OpenAnswer; messages: (string | Uint8Array)[] }>,
    {
      name: 'exec socket',
      arbitrary: fc.record({ answer: openAnswer, messages: fc.array(execClientMessage(SAFE_COMMANDS), { minLength: 1, maxLength: 8 }) }),
      async run({ answer: given, messages }) {
        const since = crashes.length;
        answer = given === 'silent' ? 'ok' : given;
        await userCase(path('exec'), messages, EXEC_CODES);
        await settleAgent();
        await expectServing(since);
      },
    } satisfies FuzzTarget<{ answer: OpenAnswer; messages: (string | Uint8Array)[] }>,
    {
      name: 'agent link (fake agent -> server)',
      arbitrary: fc.record({
        answer: openAnswer,
        // user sockets that make the server open channels the agent's frames then hit
        users: fc.array(fc.constantFrom<'terminal' | 'exec' | 'sessions'>('terminal', 'exec', 'sessions'), { minLength: 0, maxLength: 3 }),
        frames: fc.array(agentMessage, { minLength: 1, maxLength: 20 }),
      }),
      async run({ answer: given, users, frames }) {
        const since = crashes.length;
        // a sessions request the agent never answers waits out the 10 s open timeout
        answer = given === 'silent' && users.includes('sessions') ? 'ok' : given;
        const opensBefore = opens;
        const sockets = await Promise.all(users.filter((kind) => kind !== 'sessions').map((kind) => openUserSocket(server.url!, path(kind), userToken)));
        const expected = opens + users.length;
        sockets.forEach((user) => user.socket.send(user.socket.url.endsWith('/exec') ? JSON.stringify({ type: 'start', command: ['cat'] }) : JSON.stringify({ type: 'attach', cols: 80, rows: 24 })));
        // the sessions API reads a terminal-admin channel's answer: whatever the agent sends, never a 500
        const listings = users.filter((kind) => kind === 'sessions').map(() => server.app.inject({
          method: 'GET', url: `/api/v1/workspaces/${workspace.username}/${workspace.workspaceName}/terminals`, headers: { authorization: `Bearer ${userToken}` },
        }));
        // the user sockets and the link are different connections: wait until the server opened their channels
        if (users.length > 0) await world.agent.next(() => opens >= expected).catch(() => undefined);
        // ref 0 is the newest channel the server opened
        const channel = (ref: number) => (opened.length > 0 ? opened[opened.length - 1 - (ref % opened.length)] : 1001 + 2 * ref);
        for (const message of frames as LinkMessage[]) world.agent.send(message.build(channel));
        // end this case's channels from the agent's side, so the sessions requests get their answer now
        const thisCase = Math.min(opens - opensBefore, opened.length);
        for (const id of thisCase > 0 ? opened.slice(-thisCase) : []) world.agent.send({ type: 'close', channel: id, exitCode: 0 });
        await settleAgent();
        for (const response of await Promise.all(listings)) {
          if (response.statusCode === 500 || (response.statusCode >= 400 && !errorEnvelopeSchema.safeParse(response.json()).success)) {
            throw new Error(`The sessions API answered ${response.statusCode}: ${response.body.slice(0, 300)}`);
          }
        }
        for (const user of sockets) user.socket.close(1000, 'fuzz case done');
        await Promise.all(sockets.map((user) => closedWithin(user.closed)));
        await expectServing(since);
      },
    } satisfies FuzzTarget<{ answer: OpenAnswer; users: ('terminal' | 'exec' | 'sessions')[]; frames: LinkMessage[] }>,
  );
  return world;
}

/** After fuzzing: an exec the fake agent answers properly still works end to end. */
export async function expectExecStillWorks(world: ServerFuzzWorld): Promise<void> {
  world.answerOpens('ok');
  const user = await openUserSocket(world.server.url!, `/api/v1/workspaces/${world.workspace.username}/${world.workspace.workspaceName}/exec`, world.userToken);
  const from = world.agent.frames.length;
  user.socket.send(JSON.stringify({ type: 'start', command: ['echo', 'ok'] }));
  const open = await world.agent.next((frame) => frame.type === 'open', { from: Math.max(0, from - 1) });
  const channel = (open as { channel: number }).channel;
  world.agent.send({ type: 'data', channel, payload: new TextEncoder().encode('ok\n') });
  world.agent.send({ type: 'eof', channel });
  world.agent.send({ type: 'close', channel, exitCode: 0 });
  await user.text((text) => text.includes('"exit"'));
  await closedWithin(user.closed);
}
