import { createServer, type Server, type Socket } from 'node:net';
import { isAbsolute, join } from 'node:path';
import { LISTEN_CLAIM_MS, type ListenOpen, type ListenRecord } from '../protocol/agent.ts';
import { ChannelSender } from '../protocol/agent-flow.ts';
import type { ChannelContext, ChannelHandler } from './exec.ts';

/** Listeners one agent holds at once (SSH -R forwards of all connections together). */
export const MAX_LISTENERS = 64;
/** Accepted connections of one listener waiting for the server to claim them; more are dropped at once. */
export const MAX_UNCLAIMED = 64;

interface Unclaimed {
  socket: Socket;
  timer: NodeJS.Timeout;
  /** the unclaimed connections of its listener, which it leaves once claimed */
  waiting: Set<number>;
}

export interface Listeners {
  /** Opens a `listen` channel (the ChannelOpener for 'listen'). */
  open(channel: number, spec: ListenOpen, peerWindow: number, context: ChannelContext, onClosed: () => void): ChannelHandler;
  /** Takes an accepted connection the server claims by number; undefined when it is unknown, dropped or already gone. */
  claim(connection: number): Socket | undefined;
}

/**
 * The agent's listeners in the workspace (SSH tcpip-forward / streamlocal-forward). A `listen`
 * channel binds, answers open_ok and a `listening` record with the bound port, then announces
 * each connection as an `accepted` record; the connection waits, paused, until the server claims
 * it with a `tcp` channel (agent/tcp.ts) or LISTEN_CLAIM_MS pass. Closing the channel (or losing
 * the link) stops the listener and drops its unclaimed connections; claimed ones live on as their
 * own channels.
 */
export function createListeners(): Listeners {
  const unclaimed = new Map<number, Unclaimed>();
  let listeners = 0;
  let nextConnection = 1;

  const drop = (connection: number) => {
    const entry = unclaimed.get(connection);
    if (!entry) return;
    unclaimed.delete(connection);
    entry.waiting.delete(connection);
    clearTimeout(entry.timer);
    entry.socket.destroy();
  };

  return {
    claim(connection) {
      const entry = unclaimed.get(connection);
      if (!entry) return undefined;
      unclaimed.delete(connection);
      entry.waiting.delete(connection);
      clearTimeout(entry.timer);
      return entry.socket.destroyed ? undefined : entry.socket;
    },
    open(channel, spec, peerWindow, context, onClosed) {
      const sender = new ChannelSender(channel, peerWindow, (frame) => context.send(frame));
      const path = spec.path === undefined ? undefined : isAbsolute(spec.path) ? spec.path : join(context.home(), spec.path);
      const target = path ?? `${spec.host}:${spec.port}`;
      let bound = false;
      let finished = false;
      /** this listener's connections waiting for a claim */
      const waiting = new Set<number>();
      const record = (value: ListenRecord) => sender.write('data', Buffer.from(`${JSON.stringify(value)}\n`));
      const stop = () => {
        for (const connection of [...waiting]) drop(connection);
        sender.close();
        if (server.listening) server.close();
        listeners--;
        onClosed();
      };
      const finish = (error?: { code: string; message: string }) => {
        if (finished) return;
        finished = true;
        if (!bound) context.send({ type: 'open_error', channel, code: 'TCP_LISTEN_FAILED', message: error?.message ?? `The workspace could not listen on ${target}.` });
        else context.send({ type: 'close', channel, ...(error ? { error } : {}) });
        stop();
      };

      listeners++;
      const server: Server = createServer({ pauseOnConnect: true }, (socket) => {
        socket.on('error', () => {});
        if (finished || waiting.size >= MAX_UNCLAIMED) return void socket.destroy();
        const connection = nextConnection++;
        waiting.add(connection);
        const timer = setTimeout(() => drop(connection), LISTEN_CLAIM_MS);
        timer.unref();
        unclaimed.set(connection, { socket, timer, waiting });
        // a claimed socket is the tcp channel's now; an unclaimed one that closed is simply forgotten
        socket.once('close', () => drop(connection));
        record({ type: 'accepted', connection, originAddress: socket.remoteAddress ?? (path ? path : ''), originPort: socket.remotePort ?? 0 });
      });
      server.on('error', (error: NodeJS.ErrnoException) => finish({ code: 'TCP_LISTEN_FAILED', message: listenFailure(target, error) }));
      if (listeners > MAX_LISTENERS) {
        queueMicrotask(() => finish({ code: 'TCP_LISTEN_FAILED', message: `The workspace agent holds ${MAX_LISTENERS} listeners, the most it allows; cancel some forwards and try again.` }));
      } else {
        server.listen(path ? { path } : { host: spec.host, port: spec.port }, () => {
          if (finished) return void server.close();
          bound = true;
          context.send({ type: 'open_ok', channel, window: 0 });
          const address = server.address();
          record({ type: 'listening', port: typeof address === 'object' && address ? address.port : null });
        });
      }

      return {
        // the server sends nothing on a listen channel
        onData() {},
        onEof() {},
        onWindow(bytes) {
          sender.grant(bytes);
        },
        onSignal() {},
        onResize() {},
        abort() {
          if (finished) return;
          finished = true;
          stop();
        },
      };
    },
  };
}

function listenFailure(target: string, error: NodeJS.ErrnoException): string {
  switch (error.code) {
    case 'EADDRINUSE':
      return `Something in the workspace already listens on ${target}; choose another port or socket path.`;
    case 'EACCES':
      return `The workspace user may not listen on ${target}; choose a port above 1023 or another socket path.`;
    case 'EADDRNOTAVAIL':
      return `The workspace has no address to listen on for ${target}; use 127.0.0.1 or 0.0.0.0.`;
    default:
      return `Listening on ${target} in the workspace failed: ${error.message}.`;
  }
}
