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
import { corkForThisTick } from '../../protocol/tick-cork.ts';
import { noteRelayed } from '../../protocol/heap.ts';
import { guardSocket } from '../http/socket-guard.ts';
import type { ChannelEndpoint } from './hub-types.ts';
import type { AgentIdentity } from './tokens.ts';

export interface ConnectionEvents {
  onFrame(frame: AgentFrame): void;
  onClosed(code: number, reason: string): void;
  /** the first broken rule of this connection, and the one that ends it; the ones between are only counted */
  onProtocolError(message: string, count: number): void;
  /** one of our own channel endpoints threw (a bug): the channel was closed, the link lives on */
  onInternalError(error: unknown, channel: number): void;
}

/** What the guard logs an unexpected error of the link itself with. */
interface ErrorLog {
  error(object: object, message: string): void;
}

/** How long the agent has to answer an open before the caller gets an error. */
const OPEN_TIMEOUT_MS = 10_000;
/**
 * Malformed or unexpected frames a connection tolerates before it is closed 4004. Not zero: an
 * agent of a newer protocol minor may send a frame this server does not know yet, and that must
 * not cut its link. Frames about channels we already forgot (close races) are not counted at all.
 */
const MAX_PROTOCOL_ERRORS = 100;

/**
 * One live agent websocket after the handshake: decodes frames (a bad frame is counted and the
 * first one logged, never thrown), routes channel frames to their endpoints, and opens channels
 * with odd ids. A channel endpoint that throws closes only its channel; any other exception in a
 * handler closes only this link (1011), never the process.
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

  constructor(socket: WebSocket, identity: AgentIdentity, events: ConnectionEvents, log: ErrorLog) {
    this.socket = socket;
    this.identity = identity;
    this.events = events;
    const guard = guardSocket(socket, log, 'agent link');
    socket.on('message', guard.wrap((data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary)));
    socket.on('close', guard.wrap((code: number, reason: Buffer) => this.onSocketClosed(code, reason.toString())));
  }

  get isOpen(): boolean {
    return !this.closed && this.socket.readyState === this.socket.OPEN;
  }

  send(frame: AgentFrame): void {
    if (!this.isOpen) return;
    corkForThisTick(this.socket);
    const encoded = encodeFrame(frame);
    if (typeof encoded !== 'string') noteRelayed(encoded.byteLength);
    this.socket.send(encoded);
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
          try {
            this.channels.set(channel, attach(channel, peerWindow));
          } catch (error) {
            // the caller must not wait forever; onMessage then closes the channel and logs the error
            reject(new AppError('INTERNAL', 'den hit an unexpected error while opening the channel; the server log has the details.', { cause: error }));
            throw error;
          }
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

  /**
   * Counts a broken rule of the protocol: the first is reported, the one past MAX_PROTOCOL_ERRORS
   * closes the link 4004 with an `error` frame that says why. Logging every one would let an
   * agent fill the server's log.
   */
  protocolViolation(message: string): void {
    this.protocolErrors++;
    if (this.protocolErrors === 1) this.events.onProtocolError(message, 1);
    if (this.protocolErrors <= MAX_PROTOCOL_ERRORS || this.closed) return;
    this.events.onProtocolError(`${message} That is ${this.protocolErrors} malformed or unexpected frames; closing the link.`, this.protocolErrors);
    this.send({ type: 'error', code: 'AGENT_PROTOCOL_ERROR', message: `The agent sent more than ${MAX_PROTOCOL_ERRORS} malformed or unexpected frames; the server closed the link. Last: ${message}` });
    this.close(AGENT_CLOSE.protocolError, 'too many malformed frames');
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    this.lastFrameAt = Date.now();
    noteRelayed(data.byteLength);
    let frame: AgentFrame;
    try {
      frame = decodeFrame(isBinary ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data.toString('utf8'));
    } catch (error) {
      if (!(error instanceof FrameError)) throw error;
      return this.protocolViolation(error.message);
    }
    try {
      this.route(frame);
    } catch (error) {
      // an endpoint of ours failed on this frame: end that channel; anything else ends the link (the guard)
      if (!('channel' in frame)) throw error;
      this.failChannel(frame.channel, error);
    }
  }

  private route(frame: AgentFrame): void {
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

  /** Closes a channel whose endpoint threw: the agent ends what runs behind it, the endpoint's consumer learns why. */
  private failChannel(channel: number, error: unknown): void {
    const endpoint = this.channels.get(channel);
    this.channels.delete(channel);
    this.events.onInternalError(error, channel);
    const failure = { code: 'INTERNAL', message: 'den hit an unexpected error on this channel; the server log has the details.' };
    this.send({ type: 'close', channel, error: failure });
    try {
      endpoint?.onClose({ type: 'close', channel, error: failure });
    } catch (again) {
      this.events.onInternalError(again, channel);
    }
  }

  private routed(channel: number): ChannelEndpoint | undefined {
    const endpoint = this.channels.get(channel);
    // frames for a channel we closed can still be in flight; they are dropped silently
    return endpoint;
  }

  private settleOpen(channel: number, settle: (pending: { resolve: (window: number) => void; reject: (error: Error) => void }) => void): void {
    const pending = this.opening.get(channel);
    if (!pending) return this.protocolViolation(`The agent answered an open of channel ${channel}, which was not being opened.`);
    this.opening.delete(channel);
    settle(pending);
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

const PASSED_THROUGH = new Set<string>(['TERMINAL_SESSION_NOT_FOUND', 'TERMINAL_START_FAILED', 'TCP_CONNECT_FAILED', 'TCP_LISTEN_FAILED', 'AGENT_NOT_CONNECTED'] satisfies ErrorCode[]);

function openError(frame: ControlFrameOf<'open_error'>): AppError {
  if (frame.code === 'AGENT_SHUTTING_DOWN') return new AppError('AGENT_NOT_CONNECTED', `${frame.message} Start the workspace again and retry.`);
  // codes of den's public registry (PASSED_THROUGH) reach the user as they are (AGENT_NOT_CONNECTED: a replica relaying for an agent that left it)
  if (PASSED_THROUGH.has(frame.code)) return new AppError(frame.code as ErrorCode, frame.message);
  return new AppError('EXEC_FAILED', frame.message);
}
