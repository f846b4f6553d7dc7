import type { WebSocket } from 'ws';
import { AppError, type ErrorCode } from '../../protocol/errors.ts';
import {
  AGENT_CLOSE,
  decodeFrame,
  encodeFrame,
  FrameError,
  type AgentFrame,
  type ChannelSpec,
  type ControlFrameOf,
  type LifecycleState,
} from '../../protocol/agent.ts';
import type { ChannelEndpoint } from './exec-session.ts';
import type { AgentIdentity } from './tokens.ts';

export interface ConnectionEvents {
  onFrame(frame: AgentFrame): void;
  onClosed(code: number, reason: string): void;
  onProtocolError(message: string): void;
}

/** How long the agent has to answer an open before the caller gets an error. */
const OPEN_TIMEOUT_MS = 10_000;
/** Frames the agent may send about channels we already forgot (close races); beyond this it is misbehaving. */
const MAX_PROTOCOL_ERRORS = 100;

/**
 * One live agent websocket after the handshake: decodes frames (a bad frame is logged and
 * counted, never thrown), routes channel frames to their endpoints, and opens channels with odd
 * ids.
 */
export class AgentConnection {
  readonly identity: AgentIdentity;
  state: LifecycleState | undefined;
  stateMessage: string | undefined;
  lastFrameAt = Date.now();
  private readonly socket: WebSocket;
  private readonly events: ConnectionEvents;
  private readonly channels = new Map<number, ChannelEndpoint>();
  private readonly opening = new Map<number, { resolve: (window: number) => void; reject: (error: Error) => void }>();
  private nextChannel = 1;
  private protocolErrors = 0;
  private closed = false;
  private resolveClosed!: () => void;
  /** resolves once the connection is gone, however it ended */
  readonly whenClosed = new Promise<void>((resolve) => (this.resolveClosed = resolve));

  constructor(socket: WebSocket, identity: AgentIdentity, events: ConnectionEvents) {
    this.socket = socket;
    this.identity = identity;
    this.events = events;
    socket.on('message', (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary));
    socket.on('close', (code: number, reason: Buffer) => this.onSocketClosed(code, reason.toString()));
  }

  get isOpen(): boolean {
    return !this.closed && this.socket.readyState === this.socket.OPEN;
  }

  send(frame: AgentFrame): void {
    if (this.isOpen) this.socket.send(encodeFrame(frame));
  }

  /**
   * Opens a channel and resolves with its id and the agent's window once the agent accepted;
   * rejects with an AppError when the agent refuses, disconnects or does not answer.
   */
  async openChannel(spec: ChannelSpec, window: number, attach: (channel: number, peerWindow: number) => ChannelEndpoint): Promise<number> {
    if (!this.isOpen) throw notConnected();
    const channel = this.nextChannel;
    this.nextChannel += 2;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.opening.delete(channel);
        this.send({ type: 'close', channel });
        reject(new AppError('EXEC_FAILED', 'The workspace agent did not answer in time. Try again; if it keeps happening, restart the workspace.'));
      }, OPEN_TIMEOUT_MS);
      this.opening.set(channel, {
        // attach synchronously: data frames may follow open_ok in the same read, before any await resumes
        resolve: (peerWindow) => {
          clearTimeout(timer);
          this.channels.set(channel, attach(channel, peerWindow));
          resolve();
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.send({ type: 'open', channel, window, spec });
    });
    return channel;
  }

  release(channel: number): void {
    this.channels.delete(channel);
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.socket.close(code, reason);
    this.onSocketClosed(code, reason);
  }

  terminate(): void {
    this.socket.terminate();
    this.onSocketClosed(AGENT_CLOSE.heartbeatTimeout, 'heartbeat timeout');
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    this.lastFrameAt = Date.now();
    let frame: AgentFrame;
    try {
      frame = decodeFrame(isBinary ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data.toString('utf8'));
    } catch (error) {
      return this.violation(error instanceof FrameError ? error.message : String(error));
    }
    switch (frame.type) {
      case 'data':
      case 'stderr':
        return this.routed(frame.channel)?.onData(frame.type, frame.payload);
      case 'window':
        return this.routed(frame.channel)?.onWindow(frame.bytes);
      case 'eof':
        return this.routed(frame.channel)?.onEof();
      case 'close': {
        const endpoint = this.channels.get(frame.channel);
        if (!endpoint) return;
        this.channels.delete(frame.channel);
        this.send({ type: 'close', channel: frame.channel });
        return endpoint.onClose(frame);
      }
      case 'open_ok':
        return this.settleOpen(frame.channel, (pending) => pending.resolve(frame.window));
      case 'open_error':
        return this.settleOpen(frame.channel, (pending) => pending.reject(openError(frame)));
      case 'open':
        // the agent opens no channels in protocol 1.0
        return this.send({ type: 'open_error', channel: frame.channel, code: 'CHANNEL_KIND_UNSUPPORTED', message: 'The server accepts no channels from the agent.' });
      default:
        return this.events.onFrame(frame);
    }
  }

  private routed(channel: number): ChannelEndpoint | undefined {
    const endpoint = this.channels.get(channel);
    // frames for a channel we closed can still be in flight; they are dropped silently
    return endpoint;
  }

  private settleOpen(channel: number, settle: (pending: { resolve: (window: number) => void; reject: (error: Error) => void }) => void): void {
    const pending = this.opening.get(channel);
    if (!pending) return this.violation(`The agent answered an open of channel ${channel}, which was not being opened.`);
    this.opening.delete(channel);
    settle(pending);
  }

  private violation(message: string): void {
    this.protocolErrors++;
    this.events.onProtocolError(message);
    if (this.protocolErrors > MAX_PROTOCOL_ERRORS) this.close(AGENT_CLOSE.protocolError, 'too many malformed frames');
  }

  private onSocketClosed(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    for (const pending of this.opening.values()) pending.reject(notConnected());
    this.opening.clear();
    for (const endpoint of this.channels.values()) endpoint.onLinkLost();
    this.channels.clear();
    this.events.onClosed(code, reason);
    this.resolveClosed();
  }
}

function notConnected(): AppError {
  return new AppError('AGENT_NOT_CONNECTED', 'The workspace agent is not connected. Wait for the workspace to be running (`den show`) and try again.');
}

const PASSED_THROUGH = new Set<string>(['TERMINAL_SESSION_NOT_FOUND', 'TERMINAL_START_FAILED'] satisfies ErrorCode[]);

function openError(frame: ControlFrameOf<'open_error'>): AppError {
  if (frame.code === 'AGENT_SHUTTING_DOWN') return new AppError('AGENT_NOT_CONNECTED', `${frame.message} Start the workspace again and retry.`);
  // codes of den's public registry (TERMINAL_SESSION_NOT_FOUND, TERMINAL_START_FAILED) reach the user as they are
  if (PASSED_THROUGH.has(frame.code)) return new AppError(frame.code as ErrorCode, frame.message);
  return new AppError('EXEC_FAILED', frame.message);
}
