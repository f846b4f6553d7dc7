import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentFrame, ControlFrameOf } from '../protocol/agent.ts';
import { encodeExecData, EXEC_STREAM } from '../protocol/exec.ts';
import { TERMINAL_CLOSE } from '../protocol/terminal.ts';
import { createApiToken } from '../server/auth/api-tokens.ts';
import { issueAgentToken } from '../server/agents/tokens.ts';
import { systemClock } from '../server/store/time.ts';
import { connectFakeAgent, type FakeAgent } from './support/fake-agent.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { idleDriver } from './support/idle-driver.ts';
import { closedWithin, openUserSocket } from './support/sockets.ts';
import { seedWorkspace, type SeededWorkspace } from './support/workspace-seed.ts';

/**
 * Frames that once stopped the whole den server, each sent over a real websocket to a real
 * server: from a member's terminal or exec socket, and from a (fake, hostile) agent. Each must
 * end only its own socket or channel, with a coded error, and the server keeps serving.
 */
describe('frames that must not stop the server', () => {
  let server: TestServer;
  let ws: SeededWorkspace;
  let userToken: string;
  let agent: FakeAgent;

  beforeAll(async () => {
    server = await startTestServer({ listen: true, startWorkers: false, driver: () => idleDriver });
    ws = await seedWorkspace(server.store.db, { username: 'mallory', workspaceName: 'demo' });
    userToken = (await createApiToken(server.store.db, systemClock, ws.userId, { name: 'test' })).token;
    const agentToken = await issueAgentToken(server.store.db, { workspaceId: ws.workspaceId, buildId: ws.buildId, manifest: {}, now: new Date() });
    agent = await connectFakeAgent(server.url!, agentToken);
  });
  afterAll(async () => {
    agent?.close();
    await server?.close();
  });

  const terminalPath = () => `/api/v1/workspaces/${ws.username}/${ws.workspaceName}/terminal`;
  const execPath = () => `/api/v1/workspaces/${ws.username}/${ws.workspaceName}/exec`;
  const expectServing = async () => {
    expect((await server.app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    expect(server.den.agents.isConnected(ws.workspaceId)).toBe(true);
  };

  /** Starts an exec from the user's side and returns the `open` the agent got for it. */
  const startExec = async (command = ['true']) => {
    const from = agent.frames.length;
    const user = await openUserSocket(server.url!, execPath(), userToken);
    user.socket.send(JSON.stringify({ type: 'start', command }));
    const open = await agent.next((frame): frame is ControlFrameOf<'open'> => frame.type === 'open', { from });
    return { user, open, channel: open.channel };
  };

  it.each([
    ['an object whose toString is not a function', '{"type":{"toString":1}}'],
    ['an array holding such an object', '{"type":[{"toString":1}]}'],
    ['a type that is a number', '{"type":7,"cols":1}'],
  ])('closes a terminal socket 4004 TERMINAL_MESSAGE_INVALID on %s as type', async (_, message) => {
    const user = await openUserSocket(server.url!, terminalPath(), userToken);
    user.socket.send(message);
    const error = JSON.parse(await user.text((text) => text.includes('"error"')));
    expect(error).toMatchObject({ type: 'error', code: 'TERMINAL_MESSAGE_INVALID' });
    expect((await closedWithin(user.closed)).code).toBe(TERMINAL_CLOSE.protocolError);
    await expectServing();
  });

  it('ends an exec with AGENT_PROTOCOL_ERROR when the agent sends data after its eof, and the next exec works', async () => {
    const { user, channel } = await startExec();
    agent.send({ type: 'open_ok', channel, window: 65536 });
    agent.send({ type: 'eof', channel });
    agent.send({ type: 'data', channel, payload: new TextEncoder().encode('after the end') });
    const error = JSON.parse(await user.text((text) => text.includes('"error"')));
    expect(error.error).toMatchObject({ code: 'AGENT_PROTOCOL_ERROR', message: expect.stringContaining('after') });
    await closedWithin(user.closed);
    // the server told the agent to close the channel
    await agent.next((frame) => frame.type === 'close' && frame.channel === channel);
    await expectServing();
    await expectExecWorks();
  });

  it.each<[string, (channel: number) => (AgentFrame | string)[]]>([
    ['eof twice', (channel) => [{ type: 'eof', channel }, { type: 'eof', channel }, { type: 'close', channel, exitCode: 0 }]],
    ['close twice', (channel) => [{ type: 'eof', channel }, { type: 'close', channel, exitCode: 0 }, { type: 'close', channel, exitCode: 3 }]],
    ['data and a window after close', (channel) => [{ type: 'close', channel, exitCode: 0 }, { type: 'data', channel, payload: new Uint8Array([1]) }, { type: 'window', channel, bytes: 10 }]],
    ['open_ok twice', (channel) => [{ type: 'open_ok', channel, window: 1024 }, { type: 'eof', channel }, { type: 'close', channel, exitCode: 0 }]],
    ['open_error after open_ok', (channel) => [{ type: 'open_error', channel, code: 'X', message: 'late' }, { type: 'eof', channel }, { type: 'close', channel, exitCode: 0 }]],
    ['a window for an unknown channel', (channel) => [{ type: 'window', channel: channel + 1000, bytes: 5 }, { type: 'eof', channel }, { type: 'close', channel, exitCode: 0 }]],
  ])('tolerates %s from the agent on an exec channel', async (_, frames) => {
    const { user, channel } = await startExec();
    agent.send({ type: 'open_ok', channel, window: 65536 });
    for (const frame of frames(channel)) agent.send(frame);
    await closedWithin(user.closed);
    await expectServing();
    await expectExecWorks();
  });

  it('ends an exec with BAD_REQUEST when the client sends stdin after stdin_eof', async () => {
    const { user, channel } = await startExec(['cat']);
    agent.send({ type: 'open_ok', channel, window: 65536 });
    await user.text((text) => text.includes('"started"'));
    user.socket.send(JSON.stringify({ type: 'stdin_eof' }));
    user.socket.send(encodeExecData(EXEC_STREAM.stdin, new TextEncoder().encode('late input')));
    const error = JSON.parse(await user.text((text) => text.includes('"error"')));
    expect(error.error).toMatchObject({ code: 'BAD_REQUEST', message: expect.stringContaining('stdin_eof') });
    await closedWithin(user.closed);
    await expectServing();
  });

  it('closes an exec socket promptly when input queued before the start fails it', async () => {
    const from = agent.frames.length;
    const user = await openUserSocket(server.url!, execPath(), userToken);
    // a second start and stdin, queued while the channel opens: the second start fails the exec,
    // and the stdin behind it once paused the socket for good, so the close handshake hung 30 s
    user.socket.send(JSON.stringify({ type: 'start', command: ['cat'] }));
    user.socket.send(JSON.stringify({ type: 'start', command: ['cat'] }));
    user.socket.send(encodeExecData(EXEC_STREAM.stdin, new TextEncoder().encode('queued')));
    const open = await agent.next((frame): frame is ControlFrameOf<'open'> => frame.type === 'open', { from });
    agent.send({ type: 'open_ok', channel: open.channel, window: 65536 });
    const error = JSON.parse(await user.text((text) => text.includes('"error"')));
    expect(error.error).toMatchObject({ code: 'BAD_REQUEST' });
    user.socket.close(1000, 'done');
    expect((await closedWithin(user.closed)).code).toBe(4000);
    await expectServing();
  });

  it('closes a terminal socket with a coded close when the agent ends the channel with an error code too long for a close reason', async () => {
    const from = agent.frames.length;
    const user = await openUserSocket(server.url!, terminalPath(), userToken);
    user.socket.send(JSON.stringify({ type: 'attach', cols: 80, rows: 24 }));
    const open = await agent.next((frame): frame is ControlFrameOf<'open'> => frame.type === 'open', { from });
    agent.send({ type: 'open_ok', channel: open.channel, window: 65536 });
    // 64 characters of 3 bytes each: a websocket close reason holds at most 123 bytes
    agent.send({ type: 'close', channel: open.channel, error: { code: '€'.repeat(64), message: 'x' } });
    expect((await closedWithin(user.closed)).code).toBe(TERMINAL_CLOSE.goingAway);
    await agent.barrier();
    expect(agent.frames.slice(from).filter((frame) => frame.type === 'close' && frame.error?.code === 'INTERNAL')).toEqual([]);
    await expectServing();
  });

  it.each([
    ['a text message that is not UTF-8', (socket: import('ws').WebSocket) => socket.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false })],
    ['a message above the 1 MiB limit', (socket: import('ws').WebSocket) => socket.send(Buffer.alloc(1024 * 1024 + 1, 0x20), { binary: false })],
  ])('drops a terminal socket that sends %s, and keeps serving', async (_, send) => {
    const user = await openUserSocket(server.url!, terminalPath(), userToken);
    send(user.socket);
    // the websocket layer refuses these before den sees them: 1007/1009, or an abrupt end
    expect([1006, 1007, 1009]).toContain((await closedWithin(user.closed)).code);
    await expectServing();
  });

  it.each<[string, (channel: number) => AgentFrame[], number, string]>([
    ['refuses the channel with a code of its choosing', (channel) => [{ type: 'open_error', channel, code: 'EXEC_FAILED', message: 'no' }], 502, 'EXEC_FAILED'],
    ['answers something that is not a session list', (channel) => [{ type: 'open_ok', channel, window: 65536 }, { type: 'data', channel, payload: new TextEncoder().encode('{"sessions":7}') }, { type: 'close', channel }], 502, 'AGENT_PROTOCOL_ERROR'],
  ])('answers the sessions API with a coded 502, not a 500, when the agent %s', async (_, answer, status, code) => {
    const from = agent.frames.length;
    const listing = server.app.inject({ method: 'GET', url: `/api/v1/workspaces/${ws.username}/${ws.workspaceName}/terminals`, headers: { authorization: `Bearer ${userToken}` } });
    const open = await agent.next((frame): frame is ControlFrameOf<'open'> => frame.type === 'open', { from });
    for (const frame of answer(open.channel)) agent.send(frame);
    const response = await listing;
    expect(response.statusCode).toBe(status);
    expect(response.json().error.code).toBe(code);
  });

  it('survives agent control frames whose type cannot be turned into a string', async () => {
    const from = agent.frames.length;
    agent.send('{"type":{"toString":1}}');
    agent.send('{"type":[{"toString":1}],"channel":1}');
    agent.send(JSON.stringify({ type: 'ping', id: 7 }));
    await agent.next((frame) => frame.type === 'pong' && frame.id === 7, { from });
    await expectServing();
  });

  /** A plain exec that the fake agent answers correctly: the link and the server still work. */
  async function expectExecWorks(): Promise<void> {
    const { user, channel } = await startExec(['echo', 'ok']);
    agent.send({ type: 'open_ok', channel, window: 65536 });
    agent.send({ type: 'data', channel, payload: new TextEncoder().encode('ok\n') });
    agent.send({ type: 'eof', channel });
    agent.send({ type: 'close', channel, exitCode: 0 });
    await user.text((text) => text.includes('"exit"'));
    expect(JSON.parse(user.texts.at(-1)!)).toEqual({ type: 'exit', code: 0 });
    expect(Buffer.concat(user.binaries).subarray(1).toString()).toBe('ok\n');
    await closedWithin(user.closed);
  }
});
