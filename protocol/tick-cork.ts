/** A stream that can hold its writes back: a net.Socket or a TLS socket. */
export interface Corkable {
  cork(): void;
  uncork(): void;
}

/** websocket -> the TCP (or TLS) socket under it, handed over by a public API (see setTransport) */
const transports = new WeakMap<object, Corkable>();
const corked = new WeakSet<Corkable>();

/**
 * Remembers the socket a websocket runs on, as the public APIs hand it over: the HTTP upgrade
 * request's socket on the server (`request.raw.socket`), the upgrade response's on the agent
 * (`ws`'s 'upgrade' event). `ws` writes every frame to exactly that socket after the upgrade.
 */
export function setTransport(websocket: object, transport: Corkable): void {
  transports.set(websocket, transport);
}

/**
 * Holds the writes of `websocket`'s socket until the end of this tick, so the frames one handler
 * sends together (an open and the request's data; a data frame and a window grant; the frames
 * of several channels served in one read) leave in one writev instead of a system call each.
 * Nested corks are fine: the writes flush when the last uncork runs. A websocket whose socket
 * was never set is left alone (it writes as it did).
 */
export function corkForThisTick(websocket: object): void {
  const transport = transports.get(websocket);
  if (!transport || corked.has(transport)) return;
  corked.add(transport);
  transport.cork();
  process.nextTick(() => {
    corked.delete(transport);
    transport.uncork();
  });
}
