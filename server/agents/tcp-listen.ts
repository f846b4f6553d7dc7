import { AppError } from '../../protocol/errors.ts';
import { listenRecordSchema, MAX_LISTEN_RECORD_BYTES, type ListenRecord } from '../../protocol/agent.ts';
import { ReceiveWindow } from '../../protocol/agent-flow.ts';
import { parseJsonFrame } from '../../protocol/json-frame.ts';
import type { AgentHub, ChannelLink } from './hub-types.ts';
import { openTcpStream } from './tcp-stream.ts';

/** Where a listener binds inside the workspace: host:port (0: any free port), or a unix socket. */
export type ListenTarget = { host: string; port: number } | { path: string };

export type AcceptedConnection = Extract<ListenRecord, { type: 'accepted' }>;

export interface WorkspaceListener {
  /** the bound port (the chosen one when 0 was asked); null for a unix socket */
  port: number | null;
  /** Stops the listener (connections already claimed go on). */
  close(): void;
}

/** Enough for a few dozen records in flight; the agent waits for our grants beyond it. */
const LISTEN_WINDOW = 64 * 1024;

/**
 * Listens inside the workspace through the agent (a `listen` channel, protocol 1.3): resolves
 * once the agent is bound, with the port. Each connection the agent accepts reaches
 * `onConnection`, which claims it with `claim` (a `tcp` stream, as openTcpStream) or leaves it to be
 * dropped by the agent. `onEnd` runs once if the listener ends by itself (the agent's link lost,
 * the agent closed it). Throws AppError TCP_LISTEN_FAILED with the agent's sentence when the bind
 * fails, AGENT_NOT_CONNECTED when there is no agent.
 */
export async function listenInWorkspace(
  agents: AgentHub,
  workspaceId: string,
  target: ListenTarget,
  onConnection: (accepted: AcceptedConnection, claim: () => ReturnType<typeof openTcpStream>) => void,
  onEnd: () => void = () => {},
): Promise<WorkspaceListener> {
  const spec = 'path' in target ? { kind: 'listen' as const, host: '127.0.0.1', path: target.path } : { kind: 'listen' as const, host: target.host, port: target.port };
  let link: ChannelLink | undefined;
  let channelId = 0;
  let ended = false;
  let resolveBound!: (port: number | null) => void;
  let rejectBound!: (error: Error) => void;
  const bound = new Promise<number | null>((resolve, reject) => {
    resolveBound = resolve;
    rejectBound = reject;
  });
  const end = (why: string) => {
    if (ended) return;
    ended = true;
    rejectBound(new AppError('TCP_LISTEN_FAILED', why));
    onEnd();
  };
  const sendClose = () => {
    link?.send({ type: 'close', channel: channelId });
    link?.release();
    link = undefined;
  };
  const close = () => {
    if (ended) return;
    ended = true;
    sendClose();
  };
  const broken = (why: string) => {
    sendClose();
    end(why);
  };
  const receive = new ReceiveWindow(LISTEN_WINDOW);
  let partial = '';
  const onRecord = (record: ListenRecord) => {
    if (record.type === 'listening') return resolveBound(record.port);
    onConnection(record, () => openTcpStream(agents, workspaceId, { accepted: record.connection }));
  };

  await agents.openChannel(workspaceId, spec, LISTEN_WINDOW, (channel, _peerWindow, channelLink) => {
    link = channelLink;
    channelId = channel;
    return {
      onData(_type, payload) {
        if (ended) return;
        if (!receive.receive(payload.byteLength)) return broken('The workspace agent sent more than the window allowed on a listener.');
        partial += Buffer.from(payload).toString('utf8');
        for (let newline = partial.indexOf('\n'); newline >= 0; newline = partial.indexOf('\n')) {
          const parsed = parseJsonFrame(partial.slice(0, newline), MAX_LISTEN_RECORD_BYTES, listenRecordSchema, 'listener record');
          partial = partial.slice(newline + 1);
          if (!parsed.ok) return broken(`The workspace agent sent a malformed listener record: ${parsed.message}`);
          onRecord(parsed.value);
          if (ended) return;
        }
        if (partial.length > MAX_LISTEN_RECORD_BYTES) return broken('The workspace agent sent a listener record longer than allowed.');
        const grant = receive.consume(payload.byteLength, true);
        if (grant > 0) channelLink.send({ type: 'window', channel, bytes: grant });
      },
      onWindow() {},
      onEof() {},
      onClose(frame) {
        link = undefined;
        end(frame.error?.message ?? 'The workspace agent stopped listening.');
      },
      onLinkLost() {
        link = undefined;
        end('The workspace agent disconnected, so its listener is gone.');
      },
    };
  });
  return { port: await bound, close };
}
