import type { WebSocket } from 'ws';
import { AGENT_CLOSE, decodeFrame, encodeFrame, FrameError, type AgentFrame, type ControlFrameOf } from '../../protocol/agent.ts';
import { noteRelayed } from '../../protocol/heap.ts';
import { isAppError } from '../../protocol/errors.ts';
import { channelOfBinary, crossesRelayTowardsAgent } from '../../protocol/relay.ts';
import { guardSocket } from '../http/socket-guard.ts';
import { parseAgentKey, type AgentHub, type ChannelEndpoint, type ChannelLink } from './hub-types.ts';

/**
 * Replica B's end of a relay socket (protocol/relay.ts): the channels another replica opens to
 * the agent `agentKey`, which is connected here. Frames are forwarded as they come, with the
 * channel ids renamed; nothing is buffered here beyond the socket's own send buffer, which the
 * end-to-end credit bounds (each channel's data in flight is at most the window its receiver
 * granted).
 */
export function serveRelay(socket: WebSocket, hub: Pick<AgentHub, 'openChannel' | 'shutdown'>, agentKey: string, log: RelayLog): void {
  const guard = guardSocket(socket, log, 'replica relay');
  /** relay channel id -> the channel on the agent link, once the agent accepted */
  const channels = new Map<number, RelayedChannel>();
  let violations = 0;
  let closed = false;
  let lastFrameAt = Date.now();
  // The dialing replica pings every 15 s (relay.ts); one silent far longer is gone (its host
  // died without closing TCP), and what it held open must end in the workspace.
  const idle = setInterval(() => {
    if (Date.now() - lastFrameAt > SILENT_PEER_MS) socket.terminate();
  }, SILENT_PEER_MS / 4);
  idle.unref();

  const send = (frame: AgentFrame) => {
    if (socket.readyState !== socket.OPEN) return;
    const encoded = encodeFrame(frame);
    if (typeof encoded !== 'string') noteRelayed(encoded.byteLength);
    socket.send(encoded);
  };

  /** Ends one channel on both sides with a coded reason: a peer's bad frame costs only its channel. */
  const failChannel = (id: number, code: string, message: string) => {
    const channel = channels.get(id);
    if (!channel) return;
    channels.delete(id);
    if (channel.link) {
      channel.link.send({ type: 'close', channel: channel.agentChannel!, error: { code, message } });
      channel.link.release();
    } else {
      channel.abandoned = true;
    }
    send({ type: 'close', channel: id, error: { code, message } });
  };

  /** A frame the peer should not have sent and that names no channel: counted, and past a bound the socket goes. */
  const violation = (message: string) => {
    violations++;
    if (violations === 1) log.warn({ agentKey }, `a replica relay frame was refused: ${message}`);
    if (violations > MAX_VIOLATIONS) socket.close(AGENT_CLOSE.protocolError, 'too many malformed relay frames');
  };

  const open = (frame: ControlFrameOf<'open'>) => {
    if (channels.has(frame.channel) || frame.channel % 2 === 0) {
      return send({ type: 'open_error', channel: frame.channel, code: 'RELAY_PROTOCOL_ERROR', message: `Channel ${frame.channel} is in use or not an id the dialing replica may open.` });
    }
    if (channels.size >= MAX_CHANNELS) {
      return send({ type: 'open_error', channel: frame.channel, code: 'RELAY_BUSY', message: `The relay carries at most ${MAX_CHANNELS} channels to one agent; close some and try again.` });
    }
    const channel: RelayedChannel = { credit: 0, unacked: 0, abandoned: false };
    channels.set(frame.channel, channel);
    hub.openChannel(parseAgentKey(agentKey), frame.spec, frame.window, (agentChannel, peerWindow, link) => {
      channel.agentChannel = agentChannel;
      channel.link = link;
      channel.credit = peerWindow;
      if (closed || channel.abandoned) {
        // the peer went away (or gave up on the channel) while the agent was accepting it
        queueMicrotask(() => {
          link.send({ type: 'close', channel: agentChannel });
          link.release();
        });
        return IGNORED;
      }
      // open_ok goes out before any data the agent sends after it: attach runs synchronously
      send({ type: 'open_ok', channel: frame.channel, window: peerWindow });
      return endpointFor(frame.channel, channel);
    }).catch(guard.wrap((error: unknown) => {
      if (channels.get(frame.channel) === channel && !channel.link) channels.delete(frame.channel);
      if (!isAppError(error)) log.error({ err: error, agentKey }, 'opening a relayed channel failed');
      // the peer gave the channel up already: it expects no answer
      if (channel.abandoned) return;
      send({
        type: 'open_error',
        channel: frame.channel,
        code: isAppError(error) ? error.code : 'INTERNAL',
        message: isAppError(error) ? error.message : 'den hit an unexpected error while opening the channel; the server log has the details.',
      });
    }));
  };

  /** What the agent's frames of a relayed channel do: go on to the peer under the relay's channel id. */
  const endpointFor = (id: number, channel: RelayedChannel): ChannelEndpoint => ({
    onData(type, payload) {
      channel.unacked += payload.byteLength;
      send({ type, channel: id, payload });
    },
    onWindow(bytes) {
      channel.credit += bytes;
      send({ type: 'window', channel: id, bytes });
    },
    onEof() {
      send({ type: 'eof', channel: id });
    },
    onClose(frame) {
      channels.delete(id);
      send({ ...frame, channel: id });
    },
    onLinkLost() {
      channels.delete(id);
      send({ type: 'close', channel: id, error: { code: 'AGENT_NOT_CONNECTED', message: 'The workspace agent disconnected from the replica that held it. Try again: it reconnects by itself.' } });
      // the agent will come back on some replica; the peer looks it up again
      socket.close(AGENT_CLOSE.shutdown, 'the agent disconnected');
    },
  });

  const towardsAgent = (frame: AgentFrame) => {
    if (frame.type === 'open') return open(frame);
    if (frame.type === 'ping') return send({ type: 'pong', id: frame.id });
    if (frame.type === 'shutdown') {
      return void hub.shutdown(parseAgentKey(agentKey), { timeoutMs: SHUTDOWN_TIMEOUT_MS })
        .catch((error: unknown) => log.error({ err: error, agentKey }, 'a relayed agent shutdown failed'))
        .finally(() => socket.close(AGENT_CLOSE.shutdown, 'the agent shut down'));
    }
    if (!('channel' in frame)) return violation(`A '${frame.type}' frame does not belong on a relay.`);
    const channel = channels.get(frame.channel);
    // frames for a channel already closed may be in flight: dropped, like on the agent link
    if (!channel) return;
    if (!channel.link && frame.type === 'close') {
      // the peer gave up on an open the agent has not answered yet (its open timeout)
      channels.delete(frame.channel);
      channel.abandoned = true;
      return;
    }
    if (!channel.link) return failChannel(frame.channel, 'RELAY_PROTOCOL_ERROR', `The replica sent '${frame.type}' on channel ${frame.channel} before the agent accepted it.`);
    if (frame.type === 'window') {
      // a peer grants back only what it received: more would let the agent fill this replica's send buffer
      if (frame.bytes > channel.unacked) {
        return failChannel(frame.channel, 'FLOW_CONTROL_VIOLATION', 'The replica relay granted back more than it had received.');
      }
      channel.unacked -= frame.bytes;
    }
    if (frame.type === 'data' || frame.type === 'stderr') {
      if (frame.payload.byteLength > channel.credit) {
        return failChannel(frame.channel, 'FLOW_CONTROL_VIOLATION', 'The replica relay sent more data than the agent\'s window allowed.');
      }
      channel.credit -= frame.payload.byteLength;
    }
    if (frame.type === 'close') {
      channels.delete(frame.channel);
      channel.link.send({ ...frame, channel: channel.agentChannel! });
      return channel.link.release();
    }
    channel.link.send({ ...frame, channel: channel.agentChannel! } as AgentFrame);
  };

  socket.on('message', guard.wrap((data: Buffer, isBinary: boolean) => {
    lastFrameAt = Date.now();
    noteRelayed(data.byteLength);
    const bytes = isBinary ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : undefined;
    let frame: AgentFrame;
    try {
      frame = decodeFrame(bytes ?? data.toString('utf8'));
    } catch (error) {
      if (!(error instanceof FrameError)) throw error;
      const channel = bytes && channelOfBinary(bytes);
      if (channel !== undefined && channels.has(channel)) return failChannel(channel, 'RELAY_PROTOCOL_ERROR', error.message);
      return violation(error.message);
    }
    if (!crossesRelayTowardsAgent(frame)) return violation(`A '${frame.type}' frame does not cross a replica relay.`);
    towardsAgent(frame);
  }));

  socket.on('close', guard.wrap(() => {
    closed = true;
    clearInterval(idle);
    // the peer is gone: whatever it had open ends in the workspace (terminals only detach)
    for (const [, channel] of channels) {
      if (channel.link) {
        channel.link.send({ type: 'close', channel: channel.agentChannel! });
        channel.link.release();
      } else {
        channel.abandoned = true;
      }
    }
    channels.clear();
  }));
}

export interface RelayLog {
  error(details: object, message: string): void;
  warn(details: object, message: string): void;
}

interface RelayedChannel {
  /** the id on the agent link, once the agent accepted */
  agentChannel?: number;
  link?: ChannelLink;
  /** bytes the peer may still send towards the agent (the agent's window, as granted) */
  credit: number;
  /** bytes sent to the peer that it has not granted back: what this replica may be holding for it */
  unacked: number;
  /** the peer closed the channel or the socket before the agent accepted */
  abandoned: boolean;
}

/** Malformed frames that name no channel a relay socket tolerates before it is closed (as the agent link does). */
const MAX_VIOLATIONS = 100;
/** Bounds what one relay socket can make this replica hold (each channel at most one window): far above any user's open terminals and execs. */
const MAX_CHANNELS = 1_000;
/** Four of the dialing replica's 15 s pings missed. */
const SILENT_PEER_MS = 60_000;
/** How long a relayed shutdown waits for the agent to go (the build that asked waits as long). */
const SHUTDOWN_TIMEOUT_MS = 10_000;

const IGNORED: ChannelEndpoint = {
  onData() {},
  onWindow() {},
  onEof() {},
  onClose() {},
  onLinkLost() {},
};
