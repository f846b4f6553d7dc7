import WebSocket from 'ws';

/**
 * Opens the agent link's websocket. Kept free of the protocol module (and so of zod) on purpose:
 * main.ts dials before the rest of the agent is loaded, so the TCP and websocket handshakes
 * overlap module evaluation on agent start-up (create -> ready has a 1 s budget).
 */
export function dial(baseUrl: string, token: string): WebSocket {
  const socket = new WebSocket(connectUrl(baseUrl), {
    headers: { authorization: `Bearer ${token}` },
    perMessageDeflate: false,
    maxPayload: DIAL_MAX_PAYLOAD,
    handshakeTimeout: 10_000,
  });
  return socket;
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
