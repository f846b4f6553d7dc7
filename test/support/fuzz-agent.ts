import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { WebSocketServer, type WebSocket } from 'ws';
import { startAgent, type Agent } from '../../agent/link.ts';
import { terminalAdminOpener } from '../../agent/terminal/admin.ts';
import { terminalChannelOpener } from '../../agent/terminal/channel.ts';
import { TerminalSessions } from '../../agent/terminal/registry.ts';
import { AGENT_PROTOCOL, decodeFrame, encodeFrame, type AgentFrame, type DataFrame } from '../../protocol/agent.ts';
import { serverMessage, type LinkMessage } from './frame-arbitraries.ts';
import type { FuzzTarget } from './fuzz-server.ts';
import { waitFor } from './sockets.ts';

/** The agent answers a ping, or opens a channel, well within this. */
const AGENT_TIMEOUT_MS = 10_000;
/** What fuzzed exec and terminal channels may run in the agent: harmless, and quick or waiting for input. */
const SAFE_COMMANDS = [['true'], ['cat'], ['echo', 'x'], ['sh', '-c', 'exit 3']];

/**
 * den's real agent (its link module, in this process, with exec and terminal channels on real
 * processes and ptys) under a fake server on loopback that throws fuzzed frames at it: the
 * direction in which den's server, or whoever took its place, is the untrusted side.
 */
export interface AgentFuzzWorld {
  crashes: unknown[];
  target: FuzzTarget<LinkMessage[]>;
  /** what the agent sent and logged, to see that the cases reach its channels */
  stats(): { frames: number; byType: string; log: string[] };
  /** sends one frame to the agent, as the (fake) server */
  send(frame: AgentFrame): void;
  /** the first frame from the agent that satisfies `match` */
  next(match: (frame: AgentFrame) => boolean): Promise<AgentFrame>;
  /** resolves once the agent handled everything sent before */
  barrier(): Promise<void>;
  /** a channel id the fake server has not used */
  newChannel(): number;
  /** an exec the fake server opens runs and reports its output and exit code */
  expectExecStillWorks(): Promise<void>;
  close(): Promise<void>;
}

export async function startAgentFuzzWorld(): Promise<AgentFuzzWorld> {
  const crashes: unknown[] = [];
  const recordCrash = (error: unknown) => crashes.push(error);
  process.on('uncaughtException', recordCrash);
  process.on('unhandledRejection', recordCrash);

  const home = mkdtempSync(join(tmpdir(), 'den-fuzz-agent-'));
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => server.once('listening', resolve));
  const connected = new Promise<WebSocket>((resolve) => server.once('connection', resolve));
  const sessions = new TerminalSessions({ orphanTimeoutMs: 2_000, maxSessions: 20, defaults: { command: ['cat'] } });
  const exits: number[] = [];
  const logged: string[] = [];
  const agent: Agent = startAgent({
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    token: 'denagent_fuzz',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home },
    log: (message) => {
      if (logged.length < 1000) logged.push(message);
      // the link catches what its handlers throw and logs it: contained, but a bug all the same
      if (message.startsWith('failed to handle')) crashes.push(new Error(`The agent ${message}`));
    },
    onExit: (code) => exits.push(code),
    channels: { terminal: terminalChannelOpener(sessions), 'terminal-admin': terminalAdminOpener(sessions) },
  });
  const socket = await connected;
  const frames: AgentFrame[] = [];
  const wakes = new Set<() => void>();
  socket.on('message', (data: Buffer, isBinary: boolean) => {
    try {
      frames.push(decodeFrame(isBinary ? new Uint8Array(data) : data.toString('utf8')));
    } catch (error) {
      crashes.push(new Error(`The agent sent a frame that does not decode: ${(error as Error).message}`));
    }
    if (frames.length > 2_000) frames.splice(0, 1_000);
    for (const wake of [...wakes]) wake();
  });
  const send = (message: string | Uint8Array | AgentFrame) => socket.send(typeof message === 'string' || message instanceof Uint8Array ? message : encodeFrame(message));
  const next = (match: (frame: AgentFrame) => boolean) =>
    waitFor(wakes, () => frames.find(match), {
      timeoutMs: AGENT_TIMEOUT_MS,
      failure: () => new Error(`The agent did not send the frame within ${AGENT_TIMEOUT_MS} ms; agent log: ${logged.slice(-5).join(' | ')}`),
    });
  await next((frame) => frame.type === 'hello');
  send({ type: 'welcome', protocol: AGENT_PROTOCOL, workspace: { id: 'w', name: 'fuzz', ownerName: 'fuzz' }, buildId: 'b', manifest: { env: {}, startupScripts: [], apps: [] }, heartbeatMs: 600_000 });
  await next((frame) => frame.type === 'lifecycle' && frame.state === 'ready');

  let nextChannel = 1;
  let pings = 0;
  const barrier = async () => {
    const id = ++pings;
    send({ type: 'ping', id });
    await next((frame) => frame.type === 'pong' && frame.id === id);
  };
  const expectAlive = (since: number) => {
    const crash = crashes[since];
    if (crash !== undefined) throw new Error(`An exception escaped in the agent (it would have logged and carried on, but it is a bug): ${String((crash as Error)?.stack ?? crash)}`);
    if (exits.length > 0) throw new Error(`The agent stopped for good (exit ${exits[0]}); agent log: ${logged.slice(-5).join(' | ')}`);
  };

  const newChannel = () => {
    nextChannel += 2;
    return nextChannel - 2;
  };
  return {
    crashes,
    send,
    next,
    barrier,
    newChannel,
    stats: () => ({ frames: frames.length, byType: Object.entries(Object.groupBy(frames, (frame) => frame.type)).map(([type, list]) => `${type}:${list!.length}`).join(' '), log: logged.slice(0, 20) }),
    target: {
      name: 'agent link (fake server -> agent)',
      arbitrary: fc.array(serverMessage(SAFE_COMMANDS), { minLength: 1, maxLength: 20 }),
      async run(messages) {
        const since = crashes.length;
        const opened: number[] = [];
        // ref -1 is a new channel; others name the channels this case opened, newest first
        const channel = (ref: number) => {
          if (ref < 0 || opened.length === 0) {
            opened.push(newChannel());
            return opened.at(-1)!;
          }
          return opened[opened.length - 1 - (ref % opened.length)];
        };
        for (const message of messages) send(message.build(channel));
        await barrier();
        // end what the case started, so processes do not pile up over hundreds of cases
        for (const id of opened) send({ type: 'close', channel: id });
        await barrier();
        expectAlive(since);
      },
    },
    async expectExecStillWorks() {
      const id = newChannel();
      send({ type: 'open', channel: id, window: 65_536, spec: { kind: 'exec', command: ['echo', 'ok'] } });
      const close = await next((frame) => frame.type === 'close' && frame.channel === id);
      const output = frames.filter((frame): frame is DataFrame => frame.type === 'data' && frame.channel === id);
      if ((close as { exitCode?: number }).exitCode !== 0 || Buffer.concat(output.map((frame) => frame.payload)).toString() !== 'ok\n') {
        throw new Error(`The agent's exec after fuzzing ended with ${JSON.stringify(close)} and output ${JSON.stringify(Buffer.concat(output.map((frame) => frame.payload)).toString())}.`);
      }
      expectAlive(0);
    },
    async close() {
      agent.kill();
      sessions.closeAll();
      server.close();
      rmSync(home, { recursive: true, force: true });
      process.off('uncaughtException', recordCrash);
      process.off('unhandledRejection', recordCrash);
    },
  };
}
