import { DEFAULT_CHANNEL_WINDOW } from '../../protocol/agent.ts';
import { createExecSession } from './exec-session.ts';
import type { AgentHub, ExecSession } from './hub-types.ts';

/** Where a tcp channel connects inside the workspace: a port (on `host`, loopback by default) or a unix socket; or a connection a listener accepted (server/agents/tcp-listen.ts). */
export type TcpTarget = { host?: string; port: number } | { path: string } | { accepted: number };

/**
 * Opens a `tcp` channel to the workspace (SSH direct-tcpip and direct-streamlocal, `den
 * port-forward`): `stdio` is the connection (write = to the workspace, read = from it, end = a
 * half-close), with the same credit rules as an exec. `exit` settles when the connection is gone.
 * Throws AGENT_NOT_CONNECTED, or TCP_CONNECT_FAILED when nothing accepts the connection.
 */
export async function openTcpStream(agents: AgentHub, workspaceId: string, target: TcpTarget): Promise<ExecSession> {
  let session: ExecSession | undefined;
  const spec = 'path' in target
    ? { kind: 'tcp' as const, host: '127.0.0.1', path: target.path }
    : 'accepted' in target
      ? { kind: 'tcp' as const, host: '127.0.0.1', accepted: target.accepted }
      : { kind: 'tcp' as const, host: target.host ?? '127.0.0.1', port: target.port };
  await agents.openChannel(workspaceId, spec, DEFAULT_CHANNEL_WINDOW, (channel, peerWindow, link) => {
    const created = createExecSession(channel, peerWindow, (frame) => link.send(frame), () => link.release());
    session = created.session;
    return created.endpoint;
  });
  return session!;
}
