import type { Connection, ServerChannel } from 'ssh2';

/**
 * The two things the gateway needs that ssh2's server API does not offer, done through its
 * private parts. Written against ssh2 1.17.0 (package-lock.json): on an upgrade, check
 * lib/server.js (`openChannel`, the CHANNEL_OPEN handler's `reject`, CHANNEL_OPEN_CONFIRMATION)
 * and lib/protocol/Protocol.js (`openssh_authAgent`, `channelOpenFail`) still read as used here.
 */

/** Reason codes of SSH_MSG_CHANNEL_OPEN_FAILURE (RFC 4254 5.1). */
export const OPEN_FAILURE = { administrativelyProhibited: 1, connectFailed: 2 } as const;

type OpenFailureReason = (typeof OPEN_FAILURE)[keyof typeof OPEN_FAILURE];

interface Ssh2Internals {
  _chanMgr: { add(callback: ((error: Error | undefined, channel: ServerChannel) => void) & { type?: string }): number };
  _protocol: {
    openssh_authAgent(channel: number, window: number, packetSize: number): void;
    channelOpenFail(recipient: number, reason: number, description?: string): void;
  };
}

/** ssh2's window and packet size for channels it opens (lib/Channel.js MAX_WINDOW, PACKET_SIZE). */
const WINDOW = 2 * 1024 * 1024;
const PACKET_SIZE = 32 * 1024;

/**
 * Opens an `auth-agent@openssh.com` channel to the SSH client (a connection to its forwarded
 * agent). ssh2 has the packet (Protocol#openssh_authAgent) but no Connection method for it: this
 * does what its private `openChannel` does for `forwarded-tcpip`, whose confirmation handler then
 * makes the ServerChannel for any channel type.
 */
export function openAuthAgentChannel(client: Connection): Promise<ServerChannel> {
  const internals = client as unknown as Ssh2Internals;
  return new Promise((resolve, reject) => {
    const opened = (error: Error | undefined, channel: ServerChannel) => (error ? reject(error) : resolve(channel));
    opened.type = 'auth-agent@openssh.com';
    const local = internals._chanMgr.add(opened);
    if (local === -1) return reject(new Error('The SSH connection has no free channel number for the agent.'));
    internals._protocol.openssh_authAgent(local, WINDOW, PACKET_SIZE);
  });
}

/**
 * Refuses a channel the client opened with a reason code and a sentence: ssh2's `reject()` sends
 * SSH_MSG_CHANNEL_OPEN_FAILURE with an empty description and a reason of its choosing. Its
 * reject calls Protocol#channelOpenFail synchronously (after freeing the channel number), so the
 * call is given our reason and description for the length of that one call.
 */
export function refuseChannel(client: Connection, reject: () => void, reason: OpenFailureReason, description: string): void {
  const protocol = (client as unknown as Ssh2Internals)._protocol;
  const own = Object.hasOwn(protocol, 'channelOpenFail');
  const original = protocol.channelOpenFail;
  protocol.channelOpenFail = (recipient) => original.call(protocol, recipient, reason, description);
  try {
    reject();
  } finally {
    if (own) protocol.channelOpenFail = original;
    else delete (protocol as Partial<Ssh2Internals['_protocol']>).channelOpenFail;
  }
}
