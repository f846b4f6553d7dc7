import { z } from 'zod';
import type { AgentFrame } from './agent.ts';

/**
 * The replica relay: a websocket from replica A to replica B (GET /api/v1/replicas/relay?agent=KEY)
 * that carries the channels A's users open to the agent KEY, connected to B. A speaks the agent
 * link's channel layer (protocol/agent.ts) on it exactly as it would to the agent itself: `open`
 * (odd ids chosen by A), binary DATA/STDERR/WINDOW, `eof`, `close`, `signal`, `resize`, and
 * `shutdown` to ask the agent to shut down gracefully; B answers `open_ok`/`open_error` and the
 * channel frames the agent sends, renaming channel ids between the relay and the agent link.
 * There is no hello: the upgrade request authenticates A (its replica id in x-den-replica, its
 * secret as a Bearer token) and names the relay protocol version (x-den-relay-protocol).
 *
 * WINDOW frames travel end to end: B forwards credit and never buffers a channel's data, so a slow
 * user on A stops the process in the workspace as it would on B. B also checks each channel's
 * credit on its way to the agent; a frame that breaks it, or that B cannot decode but can tell the
 * channel of, closes that channel only. When the agent's link to B ends, B closes the relay socket
 * (the agent may reconnect to another replica: A looks it up again on the next open). A sends
 * `ping` every 15 s and B answers `pong`; each side drops a socket silent for much longer.
 *
 * Version history: 1.0 the frames above.
 */
export const RELAY_PROTOCOL = { major: 1, minor: 0 } as const;
export const RELAY_PROTOCOL_HEADER = 'x-den-relay-protocol';
/** the dialing replica's id; its secret goes in Authorization: Bearer */
export const RELAY_REPLICA_HEADER = 'x-den-replica';

export const relayQuerySchema = z.object({ agent: z.string().min(1).max(256) });

/** The agent link's frames that may go from A to B on a relay. */
const TOWARDS_AGENT = new Set<AgentFrame['type']>(['open', 'data', 'stderr', 'window', 'eof', 'close', 'signal', 'resize', 'shutdown', 'ping']);

export function crossesRelayTowardsAgent(frame: AgentFrame): boolean {
  return TOWARDS_AGENT.has(frame.type);
}

/** Parses the version header: `major.minor`, or undefined when missing or malformed. */
export function relayVersion(header: string | string[] | undefined): { major: number; minor: number } | undefined {
  const match = /^(\d{1,4})\.(\d{1,4})$/.exec(typeof header === 'string' ? header : '');
  return match ? { major: Number(match[1]), minor: Number(match[2]) } : undefined;
}

/** Reads the channel a binary frame names even when the rest of it is malformed, so that channel alone can be closed. */
export function channelOfBinary(message: Uint8Array): number | undefined {
  if (message.byteLength < 5) return undefined;
  const channel = new DataView(message.buffer, message.byteOffset, message.byteLength).getUint32(1);
  return channel === 0 ? undefined : channel;
}
