/**
 * The reference terminal server of issue 3's benchmark: one Node process, ws + node-pty, no agent
 * hop, speaking protocol/terminal.ts so the same benchmark client measures den and this side by
 * side. Deliberately small and independent of agent/terminal: it is the yardstick, not the product.
 *
 * - `plain` (default): ws + node-pty with ack-based pause/resume (same watermarks as den) and a
 *   headless xterm.js mirror for attach snapshots (the mirror is a consumer like a client; it
 *   can be turned off with `mirror: false` to measure the bare transport ceiling).
 * - `session`: den's own agent/terminal code (TerminalSessions + serveTerminalConnection) behind
 *   the same websocket, i.e. den minus the server and the agent link.
 *
 * Run: node bench/terminal-reference.ts [--impl plain|session] [--no-mirror] [--port N]
 * Prints `LISTENING ws://127.0.0.1:PORT` once ready. Listens on loopback only.
 */
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import headless from '@xterm/headless';
import serializeAddon from '@xterm/addon-serialize';
import * as pty from 'node-pty';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  clampCols,
  clampRows,
  decodeClientMessage,
  encodeOutput,
  encodeServerMessage,
  MAX_DATA_PAYLOAD,
  TERMINAL_CLOSE,
  TERMINAL_PROTOCOL,
  TerminalFrameError,
  type ServerControl,
} from '../protocol/terminal.ts';
import { TerminalSessions } from '../agent/terminal/registry.ts';
import { serveTerminalConnection } from '../agent/terminal/socket.ts';

export interface ReferenceOptions {
  impl?: 'plain' | 'session';
  mirror?: boolean;
  port?: number;
  /** argv of the shell; the benchmark uses a bare bash with a fixed prompt */
  command?: string[];
  env?: Record<string, string>;
  highWatermark?: number;
  lowWatermark?: number;
}

export interface ReferenceServer {
  url: string;
  close(): Promise<void>;
}

const HIGH = 256 * 1024;
const LOW = 64 * 1024;

export async function startReferenceServer(options: ReferenceOptions = {}): Promise<ReferenceServer> {
  const command = options.command ?? ['bash', '--norc', '--noprofile'];
  const env = { ...(process.env as Record<string, string>), ...options.env };
  // permessage-deflate costs 4-6x throughput and 2-3x latency on a terminal socket (shared/notes/machine.md)
  const wss = new WebSocketServer({ host: '127.0.0.1', port: options.port ?? 0, perMessageDeflate: false, maxPayload: 128 * 1024 });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  const high = options.highWatermark ?? HIGH;
  const low = options.lowWatermark ?? LOW;
  let closeAll: () => void;

  if (options.impl === 'session') {
    const sessions = new TerminalSessions({ defaults: { command, env, flow: { highWatermark: high, lowWatermark: low } } });
    closeAll = () => sessions.closeAll();
    wss.on('connection', (ws) => {
      const connection = serveTerminalConnection({ send: (m) => ws.send(m), close: (code, reason) => ws.close(code, reason) }, sessions);
      ws.on('message', (data, isBinary) => connection.message(isBinary ? toBytes(data) : data.toString()));
      ws.on('close', () => connection.closed());
    });
  } else {
    const sessions = new Map<string, PlainSession>();
    closeAll = () => {
      for (const session of sessions.values()) session.pty.kill('SIGKILL');
    };
    wss.on('connection', (ws) => servePlain(ws, sessions, { command, env, mirror: options.mirror ?? true, high, low }));
  }

  const address = wss.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    url: `ws://127.0.0.1:${port}/`,
    close: async () => {
      closeAll();
      for (const client of wss.clients) client.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
    },
  };
}

interface PlainSession {
  id: string;
  pty: pty.IPty;
  clients: Set<PlainClient>;
  mirror?: { term: InstanceType<typeof headless.Terminal>; serializer: InstanceType<typeof serializeAddon.SerializeAddon>; backlog: number };
  paused: boolean;
}
interface PlainClient {
  ws: WebSocket;
  unacked: number;
  /** output that arrived after attach and before the snapshot was sent */
  pending: Uint8Array[] | undefined;
}

function servePlain(ws: WebSocket, sessions: Map<string, PlainSession>, config: { command: string[]; env: Record<string, string>; mirror: boolean; high: number; low: number }): void {
  let session: PlainSession | undefined;
  const client: PlainClient = { ws, unacked: 0, pending: [] };
  const control = (message: ServerControl) => ws.send(encodeServerMessage(message));
  const flow = (s: PlainSession) => {
    let behind = s.mirror?.backlog ?? 0;
    for (const c of s.clients) behind = Math.max(behind, c.unacked);
    if (!s.paused && behind > config.high) {
      s.paused = true;
      s.pty.pause();
    } else if (s.paused && behind <= config.low) {
      s.paused = false;
      s.pty.resume();
    }
  };

  ws.on('message', (data, isBinary) => {
    try {
      const message = decodeClientMessage(isBinary ? toBytes(data) : data.toString());
      if (!session) {
        if (message.type !== 'attach') throw new TerminalFrameError('The first message must be attach.');
        session = message.sessionId ? sessions.get(message.sessionId) : startPlain(sessions, config, message.cols, message.rows, flow);
        if (!session) {
          control({ type: 'error', code: 'TERMINAL_SESSION_NOT_FOUND', message: 'No such session.' });
          return ws.close(TERMINAL_CLOSE.sessionNotFound);
        }
        const s = session;
        s.pty.resize(message.cols, message.rows);
        s.clients.add(client);
        const sendAttached = () => {
          control({ type: 'attached', protocol: TERMINAL_PROTOCOL, sessionId: s.id, cols: s.pty.cols, rows: s.pty.rows, snapshot: s.mirror?.serializer.serialize() ?? '' });
          const pending = client.pending ?? [];
          client.pending = undefined;
          for (const frame of pending) ws.send(frame);
        };
        // snapshot after the mirror parsed everything so far; output in between goes to the client after `attached`
        if (s.mirror) {
          s.mirror.term.resize(message.cols, message.rows);
          s.mirror.term.write('', sendAttached);
        } else sendAttached();
        return;
      }
      switch (message.type) {
        case 'input':
          return session.pty.write(typeof message.data === 'string' ? message.data : Buffer.from(message.data));
        case 'ack':
          client.unacked = Math.max(0, client.unacked - message.bytes);
          return flow(session);
        case 'resize':
          session.pty.resize(clampCols(message.cols), clampRows(message.rows));
          session.mirror?.term.resize(message.cols, message.rows);
          return;
        case 'close':
          return session.pty.kill('SIGHUP');
        case 'attach':
          throw new TerminalFrameError('Already attached.');
      }
    } catch (error) {
      if (!(error instanceof TerminalFrameError)) throw error;
      control({ type: 'error', code: 'TERMINAL_MESSAGE_INVALID', message: error.message });
      ws.close(TERMINAL_CLOSE.protocolError);
    }
  });
  ws.on('close', () => {
    if (!session) return;
    session.clients.delete(client);
    flow(session);
  });
}

function startPlain(sessions: Map<string, PlainSession>, config: { command: string[]; env: Record<string, string>; mirror: boolean }, cols: number, rows: number, flow: (s: PlainSession) => void): PlainSession {
  const [file, ...args] = config.command;
  const p = pty.spawn(file, args, { name: 'xterm-256color', cols, rows, cwd: config.env.HOME ?? process.cwd(), env: { ...config.env, TERM: 'xterm-256color' }, encoding: null });
  const session: PlainSession = { id: randomUUID(), pty: p, clients: new Set(), paused: false };
  if (config.mirror) {
    const term = new headless.Terminal({ cols, rows, scrollback: 1000, allowProposedApi: true });
    const serializer = new serializeAddon.SerializeAddon();
    term.loadAddon(serializer);
    session.mirror = { term, serializer, backlog: 0 };
  }
  sessions.set(session.id, session);
  p.onData((raw) => {
    const chunk = raw as unknown as Buffer;
    const mirror = session.mirror;
    if (mirror) {
      mirror.backlog += chunk.byteLength;
      mirror.term.write(chunk, () => {
        mirror.backlog -= chunk.byteLength;
        flow(session);
      });
    }
    for (let offset = 0; offset < chunk.byteLength; offset += MAX_DATA_PAYLOAD) {
      const frame = encodeOutput(chunk.subarray(offset, offset + MAX_DATA_PAYLOAD));
      for (const c of session.clients) {
        c.unacked += frame.byteLength - 1;
        if (c.pending) c.pending.push(frame);
        else c.ws.send(frame);
      }
    }
    flow(session);
  });
  p.onExit(({ exitCode }) => {
    sessions.delete(session.id);
    for (const c of session.clients) {
      c.ws.send(encodeServerMessage({ type: 'exit', code: exitCode }));
      c.ws.close(TERMINAL_CLOSE.sessionEnded);
    }
    session.mirror?.term.dispose();
  });
  return session;
}

function toBytes(data: unknown): Uint8Array {
  if (Array.isArray(data)) return Buffer.concat(data as Buffer[]);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return data as Uint8Array;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const value = (flag: string) => {
    const index = args.indexOf(flag);
    return index >= 0 ? args[index + 1] : undefined;
  };
  const server = await startReferenceServer({
    impl: value('--impl') === 'session' ? 'session' : 'plain',
    mirror: !args.includes('--no-mirror'),
    port: Number(value('--port') ?? 0),
    env: { PS1: 'den$ ', HOME: process.env.HOME ?? '/tmp' },
  });
  console.log(`LISTENING ${server.url}`);
  const stop = () => void server.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
