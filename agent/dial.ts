import WebSocket from 'ws';
import { setTransport } from '../protocol/tick-cork.ts';

/**
 * Opens the agent link's websocket. Kept free of the protocol module (and so of zod) on purpose:
 * main.ts dials before the rest of the agent is loaded, so the TCP and websocket handshakes
 * overlap module evaluation on agent start-up (create -> ready has a 1 s budget).
 */
export function dial(baseUrl: string, token: string): WebSocket {
  const url = connectUrl(baseUrl);
  const socket = new WebSocket(url, {
    headers: { authorization: `Bearer ${token}` },
    perMessageDeflate: false,
    maxPayload: DIAL_MAX_PAYLOAD,
    handshakeTimeout: 10_000,
    ...(unseenOnTheWay(url) ? { generateMask: zeroMask } : {}),
  });
  // the link's frames of one tick leave in one write (protocol/tick-cork.ts): ws writes to the upgrade's socket
  socket.once('upgrade', (response) => setTransport(socket, response.socket));
  return socket;
}

/**
 * A client's websocket frames are masked (RFC 6455 5.3) so that bytes a hostile page chooses
 * cannot pose as HTTP to a proxy on the way that does not understand websockets. No such proxy
 * sees a link over TLS, a unix socket or loopback: there the agent masks with zeros, which `ws`
 * skips on both ends (no copy and XOR of every payload, ADR 0026).
 */
export function unseenOnTheWay(url: string): boolean {
  const parsed = new URL(url);
  if (parsed.protocol === 'wss:' || parsed.protocol === 'ws+unix:') return true;
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function zeroMask(mask: Buffer): void {
  mask.fill(0);
}

/** = MAX_CONTROL_FRAME_BYTES of protocol/agent.ts (a test keeps them equal); not imported, see above. */
export const DIAL_MAX_PAYLOAD = 1024 * 1024;

/**
 * The base URL for a server reached through a unix socket (DEN_AGENT_SOCKET: the process
 * runtime's sandbox has no route to den's address). `ws` dials `ws+unix://<socket>:<path>`.
 */
export function socketBaseUrl(socketPath: string): string {
  return `ws+unix://${socketPath}:`;
}

/** `${url}/api/v1/agent/connect` with ws(s) for http(s); ws+unix stays as it is. */
export function connectUrl(base: string): string {
  const url = new URL(base.replace(/\/+$/, '') + '/api/v1/agent/connect');
  if (url.protocol === 'http:') url.protocol = 'ws:';
  else if (url.protocol === 'https:') url.protocol = 'wss:';
  return url.toString();
}
