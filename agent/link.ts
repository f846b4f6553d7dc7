import { randomUUID } from 'node:crypto';
import { arch, constants, hostname, homedir, platform, release } from 'node:os';
import WebSocket from 'ws';
import { corkForThisTick } from '../protocol/tick-cork.ts';
import { noteRelayed } from '../protocol/heap.ts';
import {
  AGENT_CLOSE,
  AGENT_PROTOCOL,
  decodeFrame,
  encodeFrame,
  FrameError,
  type AgentFrame,
  type AgentManifest,
  type ChannelSpec,
  type ControlFrameOf,
  type LifecycleState,
} from '../protocol/agent.ts';
import { openExecChannel, type ChannelContext, type ChannelHandler } from './exec.ts';
import { dial } from './dial.ts';
import { createListeners } from './listen.ts';
import { openTcpChannel } from './tcp.ts';
import { openSyncSource } from './sync/source.ts';
import { openSyncTarget } from './sync/target.ts';
import { LogOutbox } from './log-outbox.ts';
import { runStartupScripts, type ScriptStream } from './startup.ts';

export const AGENT_VERSION = '0.1.0';

export interface AgentOptions {
  /** the server's base URL (http, https, ws or wss) */
  url: string;
  token: string;
  /** the agent's environment without its token; children start from it */
  env: Record<string, string>;
  log(message: string): void;
  /** called when the agent must stop for good (unauthorized, replaced, shut down) */
  onExit(code: number): void;
  /** channel kinds beyond exec and tcp (the terminal and sync channels plug in here) */
  channels?: ChannelOpeners;
  /** start-up milestones (connected, welcomed, ready), for measuring start-up */
  onMilestone?(name: string): void;
  /** a socket already being dialed (by main.ts, while the agent's modules loaded) to use first */
  dialed?: WebSocket;
}

/**
 * Opens one channel of a kind. Must answer open_ok or open_error through `context.send`, and
 * call `onClosed` once the channel is finished on the agent's side.
 */
export type ChannelOpener<K extends ChannelSpec['kind']> = (
  channel: number,
  spec: Extract<ChannelSpec, { kind: K }>,
  peerWindow: number,
  context: ChannelContext,
  onClosed: () => void,
) => ChannelHandler;
export type ChannelOpeners = { [K in ChannelSpec['kind']]?: ChannelOpener<K> };

export interface Agent {
  /** Graceful: report shutting_down, end children, report off, close. */
  shutdown(reason: string): Promise<void>;
  /** Hard: kill children and drop the connection now. */
  kill(): void;
}

/** Reconnect backoff: doubles from 100 ms to a 5 s cap, with jitter so many agents do not dial in lockstep after a server restart. */
const BACKOFF_BASE_MS = 100;
const BACKOFF_CAP_MS = 5_000;
/** How long children get after SIGTERM during a graceful shutdown. */
const CHILD_GRACE_MS = 3_000;
const MAX_CHANNELS = 1024;

/** Dials the server and keeps one connection, reconnecting with jittered exponential backoff. */
export function startAgent(options: AgentOptions): Agent {
  let dialed = options.dialed;
  const instance = randomUUID();
  const listeners = createListeners();
  const openers: ChannelOpeners = {
    exec: openExecChannel,
    tcp: (channel, spec, peerWindow, context, onClosed) => openTcpChannel(channel, spec, peerWindow, context, onClosed, listeners.claim),
    listen: listeners.open,
    'sync-source': openSyncSource,
    'sync-target': openSyncTarget,
    ...options.channels,
  };
  let socket: WebSocket | undefined;
  let welcomed = false;
  let attempt = 0;
  let stopped = false;
  let reconnectTimer: NodeJS.Timeout | undefined;
  let heartbeatTimer: NodeJS.Timeout | undefined;
  let lastFrameAt = Date.now();
  let heartbeatMs = 15_000;

  let state: LifecycleState = 'starting';
  let stateMessage: string | undefined;
  let manifest: AgentManifest | undefined;
  let startupBegun = false;
  const channels = new Map<number, ChannelHandler>();
  let onChannelsEmpty: (() => void) | undefined;
  /** frames from the server that did not decode: the first is logged, then every tenfold count */
  let badFrames = 0;
  const logs = new LogOutbox((count) => options.log(`dropped ${count} unacknowledged startup log frames while disconnected`));

  const send = (frame: AgentFrame, written?: () => void) => {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    corkForThisTick(socket);
    const encoded = encodeFrame(frame);
    if (typeof encoded !== 'string') noteRelayed(encoded.byteLength);
    socket.send(encoded, written && (() => written()));
  };
  const setState = (next: LifecycleState, message?: string) => {
    state = next;
    stateMessage = message;
    if (welcomed) send({ type: 'lifecycle', state, ...(message ? { message } : {}) });
  };
  const appendLog = (script: string, stream: ScriptStream, lines: string[]) => {
    const frame = logs.append(script, stream, lines);
    if (welcomed) send(frame);
  };
  const baseEnv = () => ({ ...options.env, ...manifest?.env });
  const home = () => baseEnv().HOME ?? homedir();

  const connect = () => {
    if (stopped) return;
    welcomed = false;
    const ws = dialed ?? dial(options.url, options.token);
    dialed = undefined;
    socket = ws;
    const onOpen = () => {
      options.onMilestone?.('connected');
      lastFrameAt = Date.now();
      watchHeartbeat(); // also catches a server that accepts the socket but never welcomes us
      const os = { platform: platform(), arch: arch(), release: release(), hostname: hostname() };
      send({ type: 'hello', protocol: AGENT_PROTOCOL, agentVersion: AGENT_VERSION, instance, os, state, startupBegun });
    };
    ws.on('open', onOpen);
    ws.on('unexpected-response', (_request, response) => {
      let body = '';
      response.on('data', (chunk: Buffer) => (body += chunk.toString('utf8').slice(0, 4096)));
      response.on('end', () => {
        const message = errorMessage(body) ?? `The server answered ${response.statusCode}.`;
        if (response.statusCode === 401 || response.statusCode === 403) {
          options.log(`the server refused the agent token: ${message}`);
          finalStop(2);
          ws.terminate();
        } else {
          options.log(`cannot connect: ${message}`);
          ws.terminate();
          scheduleReconnect();
        }
      });
    });
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      noteRelayed(data.byteLength);
      lastFrameAt = Date.now();
      let frame: AgentFrame;
      try {
        frame = decodeFrame(isBinary ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data.toString('utf8'));
      } catch (error) {
        // a bad frame from the server is ignored; it never takes the agent down, nor floods its log
        if (!(error instanceof FrameError)) throw error;
        badFrames++;
        if (isPowerOfTen(badFrames)) options.log(`ignored ${badFrames === 1 ? 'a frame' : `${badFrames} frames so far`} from the server; the last: ${error.message}`);
        return;
      }
      try {
        onFrame(frame);
      } catch (error) {
        // a bug of ours on this frame: one channel may be left half-done, the link and the agent carry on
        options.log(`failed to handle a '${frame.type}' frame: ${(error as Error).stack ?? String(error)}`);
      }
    });
    ws.on('close', (code, reason) => {
      if (socket !== ws) return;
      socket = undefined;
      welcomed = false;
      clearInterval(heartbeatTimer);
      for (const channel of channels.values()) channel.abort();
      channels.clear();
      if (code === AGENT_CLOSE.unauthorized || code === AGENT_CLOSE.protocolUnsupported || code === AGENT_CLOSE.replaced) {
        options.log(`the server closed the link for good (${code}): ${reason.toString() || 'no reason given'}`);
        return finalStop(code === AGENT_CLOSE.replaced ? 0 : 2);
      }
      scheduleReconnect();
    });
    ws.on('error', (error) => {
      // one line per outage, then one per 10 failed attempts, so a long server restart does not flood the log
      if (attempt === 0 || attempt % 10 === 0) options.log(`link error: ${error.message}; reconnecting with backoff`);
    });
    // a pre-dialed socket may have opened, or failed, before we got here
    if (ws.readyState === WebSocket.OPEN) onOpen();
    else if (ws.readyState !== WebSocket.CONNECTING) {
      socket = undefined;
      scheduleReconnect();
    }
  };

  // the server pings every heartbeatMs; three silent intervals mean the connection is dead
  const watchHeartbeat = () => {
    clearInterval(heartbeatTimer);
    heartbeatTimer = setInterval(() => {
      if (Date.now() - lastFrameAt > 3 * heartbeatMs) socket?.terminate();
    }, heartbeatMs);
    heartbeatTimer.unref();
  };

  const scheduleReconnect = () => {
    if (stopped || reconnectTimer) return;
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    attempt++;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined;
      connect();
    }, delay);
  };

  const onFrame = (frame: AgentFrame) => {
    switch (frame.type) {
      case 'welcome':
        return onWelcome(frame);
      case 'ping':
        return send({ type: 'pong', id: frame.id });
      case 'log_ack': {
        return logs.ack(frame.seq);
      }
      case 'shutdown':
        if (frame.graceful) void agent.shutdown(frame.reason ?? 'the server asked');
        else agent.kill();
        return;
      case 'error':
        options.log(`server error ${frame.code}: ${frame.message}`);
        return;
      case 'open':
        return onOpen(frame);
      case 'data':
        return channels.get(frame.channel)?.onData(frame.payload);
      case 'window':
        return channels.get(frame.channel)?.onWindow(frame.bytes);
      case 'eof':
        return channels.get(frame.channel)?.onEof();
      case 'signal':
        // a name this system has no signal for (valid by the schema, e.g. from a server on another OS) is ignored: kill() would throw
        if (!Object.hasOwn(constants.signals, frame.signal)) return;
        return channels.get(frame.channel)?.onSignal(frame.signal as NodeJS.Signals);
      case 'resize':
        return channels.get(frame.channel)?.onResize(frame.cols, frame.rows);
      case 'close': {
        const channel = channels.get(frame.channel);
        if (!channel) return;
        channels.delete(frame.channel);
        channel.abort();
        return send({ type: 'close', channel: frame.channel });
      }
      default:
        options.log(`ignored an unexpected '${frame.type}' frame from the server`);
    }
  };

  const onWelcome = (frame: ControlFrameOf<'welcome'>) => {
    options.onMilestone?.('welcomed');
    welcomed = true;
    attempt = 0;
    heartbeatMs = frame.heartbeatMs;
    watchHeartbeat();
    for (const log of logs.unacknowledged()) send(log);
    if (startupBegun) {
      // a reconnect: the scripts ran (or run) already; report where we are
      send({ type: 'lifecycle', state, ...(stateMessage ? { message: stateMessage } : {}) });
      return;
    }
    startupBegun = true;
    manifest = frame.manifest;
    setState('starting');
    const env = baseEnv();
    void runStartupScripts(manifest.startupScripts, { env, cwd: home(), onLines: appendLog }).then((result) => {
      if (state !== 'starting') return; // shutting down meanwhile
      options.onMilestone?.('scripts done');
      if (result.ok) setState('ready');
      else setState('start_error', result.message);
    });
  };

  const onOpen = (frame: ControlFrameOf<'open'>) => {
    const { channel, spec } = frame;
    const refuse = (code: string, message: string) => send({ type: 'open_error', channel, code, message });
    if (channels.has(channel)) return refuse('CHANNEL_IN_USE', `Channel ${channel} is already open.`);
    if (channels.size >= MAX_CHANNELS) return refuse('TOO_MANY_CHANNELS', `The agent has ${MAX_CHANNELS} channels open; close some and try again.`);
    if (state === 'shutting_down' || state === 'off') return refuse('AGENT_SHUTTING_DOWN', 'The workspace agent is shutting down.');
    const opener = openers[spec.kind] as ChannelOpener<typeof spec.kind> | undefined;
    if (!opener) return refuse('CHANNEL_KIND_UNSUPPORTED', `This agent (${AGENT_VERSION}) does not support ${spec.kind} channels yet.`);
    // an opener may finish the channel before it returns (open_error sent at once): then it is never registered
    let handler: ChannelHandler | undefined;
    let finishedEarly = false;
    handler = opener(channel, spec, frame.window, { send, baseEnv, home }, () => {
      if (handler === undefined) finishedEarly = true;
      else if (channels.get(channel) === handler) channels.delete(channel);
      if (channels.size === 0) onChannelsEmpty?.();
    });
    if (!finishedEarly) channels.set(channel, handler);
  };

  const finalStop = (code: number) => {
    stopped = true;
    clearTimeout(reconnectTimer);
    clearInterval(heartbeatTimer);
    for (const channel of channels.values()) channel.abort();
    channels.clear();
    options.onExit(code);
  };

  const agent: Agent = {
    async shutdown(reason) {
      if (stopped || state === 'shutting_down') return;
      options.log(`shutting down: ${reason}`);
      setState('shutting_down', reason);
      for (const channel of channels.values()) channel.onSignal('SIGTERM');
      if (channels.size > 0) {
        await new Promise<void>((resolve) => {
          onChannelsEmpty = resolve;
          setTimeout(resolve, CHILD_GRACE_MS).unref();
        });
      }
      setState('off');
      const ws = socket;
      stopped = true;
      if (ws && ws.readyState === WebSocket.OPEN) {
        await new Promise<void>((resolve) => {
          ws.once('close', () => resolve());
          ws.close(AGENT_CLOSE.shutdown, 'agent shut down');
          setTimeout(resolve, 1_000).unref();
        });
      }
      finalStop(0);
    },
    kill() {
      socket?.terminate();
      finalStop(1);
    },
  };
  connect();
  return agent;
}

function isPowerOfTen(count: number): boolean {
  return Number.isInteger(Math.log10(count));
}

function errorMessage(body: string): string | undefined {
  try {
    const parsed = JSON.parse(body) as { error?: { code?: string; message?: string } };
    return parsed.error?.message ? `${parsed.error.code}: ${parsed.error.message}` : undefined;
  } catch {
    return undefined;
  }
}
