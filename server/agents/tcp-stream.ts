import { DEFAULT_CHANNEL_WINDOW, MAX_BULK_DATA_PAYLOAD } from '../../protocol/agent.ts';
import { createExecSession } from './exec-session.ts';
import type { AgentHub, ExecSession } from './hub-types.ts';

/** Where a tcp channel connects inside the workspace: a port (on `host`, loopback by default) or a unix socket; or a connection a listener accepted (server/agents/tcp-listen.ts). */
export type TcpTarget = { host?: string; port: number } | { path: string } | { accepted: number };

/**
 * A bound on what large-window tcp channels may hold in this server: a channel asks for `window`
 * bytes of credit at open and gets it while the channels holding one stay under `cap` bytes
 * together; otherwise it opens with the default window. So a bulk download is not throttled by a
 * small window, and a thousand of them hold at most `cap` + the default window each.
 */
export class WindowBudget {
  private held = 0;
  readonly window: number;
  readonly cap: number;

  constructor(window: number, cap: number) {
    this.window = window;
    this.cap = cap;
  }

  /** The window a new channel may declare, and how to give it back once the channel is gone (once). */
  take(): { window: number; release: () => void } {
    if (this.window <= DEFAULT_CHANNEL_WINDOW || this.held + this.window > this.cap) return { window: DEFAULT_CHANNEL_WINDOW, release: () => {} };
    this.held += this.window;
    let released = false;
    return {
      window: this.window,
      release: () => {
        if (released) return;
        released = true;
        this.held -= this.window;
      },
    };
  }

  get heldBytes(): number {
    return this.held;
  }
}

/**
 * Opens a `tcp` channel to the workspace (SSH direct-tcpip and direct-streamlocal, `den
 * port-forward`, the app proxy): `stdio` is the connection (write = to the workspace, read = from
 * it, end = a half-close), with the same credit rules as an exec. `exit` settles when the
 * connection is gone. With `budget` (a bulk channel: the app proxy), the server's end declares the
 * budget's larger window when it has room, and with it DATA frames of up to MAX_BULK_DATA_PAYLOAD
 * (protocol 1.8: a 1.8 agent sends a fast download in frames of a whole socket read). Throws AGENT_NOT_CONNECTED, or TCP_CONNECT_FAILED when nothing accepts the connection.
 */
export async function openTcpStream(agents: AgentHub, workspaceId: string, target: TcpTarget, budget?: WindowBudget): Promise<ExecSession> {
  let session: ExecSession | undefined;
  const reserved = budget?.take() ?? { window: DEFAULT_CHANNEL_WINDOW, release: () => {} };
  // bulk frames only with the large window: the agent may queue one frame's worth past the credit, the budget bounds how many such channels there are
  const bulk = reserved.window > DEFAULT_CHANNEL_WINDOW ? { maxData: MAX_BULK_DATA_PAYLOAD } : {};
  const spec = 'path' in target
    ? { kind: 'tcp' as const, host: '127.0.0.1', path: target.path, ...bulk }
    : 'accepted' in target
      ? { kind: 'tcp' as const, host: '127.0.0.1', accepted: target.accepted, ...bulk }
      : { kind: 'tcp' as const, host: target.host ?? '127.0.0.1', port: target.port, ...bulk };
  try {
    await agents.openChannel(workspaceId, spec, reserved.window, (channel, peerWindow, link) => {
      const created = createExecSession(channel, peerWindow, (frame) => link.send(frame), () => {
        reserved.release();
        link.release();
      }, reserved.window);
      session = created.session;
      return created.endpoint;
    });
  } catch (error) {
    reserved.release();
    throw error;
  }
  return session!;
}
