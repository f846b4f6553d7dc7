import { z } from 'zod';
import { parseJsonFrame } from './json-frame.ts';
import { syncSourceOpenSchema, syncTargetOpenSchema } from './sync.ts';

/**
 * The agent link: one websocket from the agent in a workspace to the server, multiplexing
 * numbered channels with per-channel credit-based flow control (see agent-flow.ts).
 *
 * Protocol version history (bump minor for additive changes, major for breaking ones; the
 * server refuses majors it does not know with AGENT_PROTOCOL_UNSUPPORTED):
 *  - 1.0  hello/welcome, lifecycle, log (+log_ack), ping/pong, shutdown, error; channels with
 *         open/open_ok/open_error/eof/close/signal/resize; binary data, stderr and window frames.
 *         Channel kinds: exec. Reserved kinds (agent answers open_error CHANNEL_KIND_UNSUPPORTED
 *         until implemented): terminal, tcp, sync.
 *  - 1.1  `terminal` channels (records of protocol/terminal.ts in DATA, see agent/terminal/channel.ts)
 *         and short-lived `terminal-admin` channels: the agent answers `open_ok`, one JSON
 *         document in DATA (list: protocol/terminal.ts `terminalSessionListSchema`), then `close`;
 *         or `open_error TERMINAL_SESSION_NOT_FOUND` for a close of an unknown session.
 *  - 1.2  `tcp` channels: a stream to a port or a unix socket in the workspace (agent/tcp.ts);
 *         open_error TCP_CONNECT_FAILED when nothing accepts the connection.
 *  - 1.3  `listen` channels (agent/listen.ts): the agent listens on a port or a unix socket in the
 *         workspace (SSH -R); DATA towards the server carries `listenRecordSchema` lines (the
 *         bound port, then one `accepted` record per connection), open_error TCP_LISTEN_FAILED when
 *         the bind fails, and closing the channel stops the listener. The server claims each
 *         accepted connection by opening a `tcp` channel with `accepted` set to its number, so the
 *         agent still opens no channels and every byte keeps the credit flow control.
 *  - 1.4  `sync-source` and `sync-target` channels (protocol/sync.ts, agent/sync/) replace the
 *         reserved `sync` kind: the server pipes a workspace folder's op stream from the workspace
 *         agent into a service's agent.
 *  - 1.5  two-way sync: `twoWay` on both sync kinds' open, `base`/`digest` on the op records, the
 *         `conflict` record and status line (protocol/sync.ts, agent/sync/conflict.ts). Both
 *         agents come from the server's own bundle, so both ends of a two-way sync speak it.
 *  - 1.6  sync: after the hashes disagree the source sends a listing (`verify` records), the
 *         target reports the paths that differ and the source resends only those (protocol/sync.ts).
 *  - 1.7  not used (the number was handed to a branch that needed no wire change).
 *  - 1.8  bulk frames: a `tcp` open may carry `maxData`, the largest DATA payload the server takes
 *         on that channel (MAX_DATA_PAYLOAD up to MAX_BULK_DATA_PAYLOAD); an agent of 1.8 then
 *         sends what it reads from the connection in frames of up to that size (the app proxy's
 *         downloads: one frame per socket read instead of one per 64 KiB). Receivers of 1.8 decode
 *         DATA payloads up to MAX_BULK_DATA_PAYLOAD; an older agent ignores the field and sends
 *         64 KiB frames, an older server never sets it.
 *
 * Framing. Every websocket message is one frame.
 *  - Text messages are control frames: UTF-8 JSON, validated by `controlFrameSchema`
 *    (a discriminated union on `type`), at most MAX_CONTROL_FRAME_BYTES.
 *  - Binary messages are channel frames with a 5-byte header:
 *        u8 frame type | u32 channel id (big endian) | payload
 *    DATA (0x01)   payload = bytes of the primary stream (stdin towards the agent, stdout from it)
 *    STDERR (0x02) payload = bytes of the secondary stream (stderr from the agent)
 *    WINDOW (0x03) payload = u32 credit increment in bytes (the receiver drained that much)
 *    Data payloads are at most MAX_DATA_PAYLOAD bytes (MAX_BULK_DATA_PAYLOAD on a channel whose
 *    receiver declared it, 1.8); larger writes are split.
 *
 * Channels. The server opens channels with odd ids and the agent with even ids (none yet), so
 * both sides may open without coordinating; ids are never reused on one connection. `open` and
 * `open_ok` each carry the opener's and the accepter's initial receive window. A sender never has
 * more unacknowledged DATA+STDERR bytes in flight than the credit granted by the receiver; the
 * receiver sends WINDOW as its consumer drains, so a channel whose consumer is slow stops its own
 * producer and never stalls the others. Exceeding the credit is a protocol violation that closes
 * the offending channel. `eof` means "no more data from me"; `close` ends the channel on both
 * sides and carries the exit status of exec channels: the receiver ends whatever runs behind the
 * channel and answers with its own `close` if it still had the channel open. Frames for unknown
 * (already closed) channels are dropped without an answer.
 *
 * Link. The agent sends `hello` first (version, its per-process `instance` id, current state);
 * the server answers `welcome` (workspace, build, manifest, heartbeat interval) or `error` and a
 * close code from AGENT_CLOSE. The agent then reports `lifecycle` changes and startup-script
 * output as `log` frames numbered per instance; the server appends each seq once and acks it
 * (`log_ack`), so unacked frames are resent after a reconnect. The server pings every
 * `heartbeatMs`; either side drops a connection silent for three intervals.
 *
 * A `terminal` channel's DATA carries protocol/terminal.ts records (output and control towards the
 * server, input, acks and control towards the agent); its abort detaches rather than kills, so
 * sessions survive the link. A `tcp` channel carries a raw byte stream to host:port or a unix socket in the
 * workspace (port forwarding, SSH direct-tcpip, the app proxy); `eof` maps to a TCP half-close.
 * A `listen` channel is a listener in the workspace; its connections become `tcp` channels the
 * server opens (see 1.3).
 */
export const AGENT_PROTOCOL = { major: 1, minor: 8 } as const;

/**
 * The name of a workspace's own agent; an agent beside an environment service is named after
 * the service (a service named 'main' cannot have one).
 */
export const MAIN_AGENT = 'main';

export const CHANNEL_HEADER_BYTES = 5;
/** Control frames are JSON text; the manifest in `welcome` is the largest one. Matches the server's ws maxPayload. */
export const MAX_CONTROL_FRAME_BYTES = 1024 * 1024;
/** The largest payload of one DATA/STDERR frame; bigger writes are split into several frames. */
export const MAX_DATA_PAYLOAD = 64 * 1024;
/**
 * The largest DATA payload a receiver may declare it takes on a channel (protocol 1.8, `maxData` of
 * a tcp open): a frame of it is exactly MAX_CONTROL_FRAME_BYTES, the websocket maxPayload of every
 * end of the link (agent, server, the relay between replicas), so no end needs a larger one.
 */
export const MAX_BULK_DATA_PAYLOAD = MAX_CONTROL_FRAME_BYTES - CHANNEL_HEADER_BYTES;
/** The receive window a side advertises when it does not choose one: enough for loopback throughput, small enough to bound memory per channel. */
export const DEFAULT_CHANNEL_WINDOW = 256 * 1024;
/** Largest window a receiver may advertise (bounds what a peer can make us buffer). */
export const MAX_CHANNEL_WINDOW = 16 * 1024 * 1024;

/** Websocket close codes of the agent link (4000-4999 are application codes). */
export const AGENT_CLOSE = {
  /** the server is shutting the agent down or the agent is exiting */
  shutdown: 4000,
  /** token unknown, revoked, or for another workspace: do not retry */
  unauthorized: 4001,
  /** the server does not speak this protocol major: do not retry */
  protocolUnsupported: 4002,
  /** a newer connection for the same workspace replaced this one: do not retry */
  replaced: 4003,
  /** a malformed frame or a broken rule of the protocol */
  protocolError: 4004,
  /** no frame arrived within the heartbeat timeout */
  heartbeatTimeout: 4005,
} as const;

export const FRAME_TYPE = { data: 0x01, stderr: 0x02, window: 0x03 } as const;

export const lifecycleStateSchema = z.enum(['starting', 'ready', 'start_error', 'shutting_down', 'off']);
export type LifecycleState = z.infer<typeof lifecycleStateSchema>;

const channelId = z.number().int().min(1).max(0xffffffff);
const windowSize = z.number().int().min(0).max(MAX_CHANNEL_WINDOW);
const envSchema = z.record(z.string().min(1).max(256), z.string().max(128 * 1024));
const versionSchema = z.object({ major: z.number().int().min(0), minor: z.number().int().min(0) });
const name = z.string().min(1).max(128);

export const startupScriptSchema = z.object({
  name,
  /** run by `bash -lc` (or `sh -c` when bash is missing), cwd = HOME */
  run: z.string().min(1).max(256 * 1024),
  timeoutMs: z.number().int().min(1).max(24 * 3600 * 1000).default(5 * 60 * 1000),
  /** blocking scripts run one after another and must succeed before `ready`; others run in the background */
  blocking: z.boolean().default(true),
});
export type StartupScript = z.infer<typeof startupScriptSchema>;

export const agentAppSchema = z.object({
  name,
  displayName: z.string().max(256).optional(),
  port: z.number().int().min(1).max(65535).optional(),
  url: z.string().max(2048).optional(),
  command: z.string().max(64 * 1024).optional(),
});

/** What the server tells the agent on every connect: derived from the template at build time. */
export const agentManifestSchema = z.object({
  env: envSchema.default({}),
  startupScripts: z.array(startupScriptSchema).max(100).default([]),
  apps: z.array(agentAppSchema).max(100).default([]),
});
export type AgentManifest = z.infer<typeof agentManifestSchema>;
export type AgentManifestInput = z.input<typeof agentManifestSchema>;

export const execOpenSchema = z.object({
  kind: z.literal('exec'),
  /** argv; spawned without a shell */
  command: z.array(z.string().max(128 * 1024)).min(1).max(4096),
  env: envSchema.optional(),
  cwd: z.string().max(4096).optional(),
  /** allocate a pty of this size instead of pipes (stdout and stderr merge) */
  tty: z.object({ cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) }).optional(),
});
/** A reattachable pty session (agent/terminal/channel.ts): one channel per attached client; DATA carries protocol/terminal.ts records both ways; abort only detaches. */
export const terminalOpenSchema = z.object({
  kind: z.literal('terminal'),
  sessionId: z.string().max(128).optional(),
  command: z.array(z.string()).max(4096).optional(),
  cols: z.number().int().min(1).max(1000),
  rows: z.number().int().min(1).max(1000),
  env: envSchema.optional(),
});
/** The agent's terminal session registry: list the sessions, or hang one up. */
export const terminalAdminOpenSchema = z.discriminatedUnion('op', [
  z.object({ kind: z.literal('terminal-admin'), op: z.literal('list') }),
  z.object({ kind: z.literal('terminal-admin'), op: z.literal('close'), sessionId: z.string().min(1).max(128) }),
]);
/**
 * A byte stream to a TCP port (host:port as the workspace resolves it) or to a unix socket
 * (`path`) in the workspace: port forwarding, SSH direct-tcpip and direct-streamlocal, the app
 * proxy. Exactly one of `port` and `path`. `eof` is a half-close; `close` ends the connection.
 */
export const tcpOpenSchema = z
  .object({
    kind: z.literal('tcp'),
    host: z.string().min(1).max(255).default('127.0.0.1'),
    port: z.number().int().min(1).max(65535).optional(),
    path: z.string().min(1).max(4096).optional(),
    /** a connection a `listen` channel of this agent accepted (its `accepted` record's number), instead of connecting */
    accepted: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional(),
    /** 1.8: the largest DATA payload the server takes on this channel; absent: MAX_DATA_PAYLOAD */
    maxData: z.number().int().min(MAX_DATA_PAYLOAD).max(MAX_BULK_DATA_PAYLOAD).optional(),
  })
  .refine((spec) => [spec.port, spec.path, spec.accepted].filter((value) => value !== undefined).length === 1, 'A tcp channel names exactly one of a port, a unix socket path and an accepted connection.');
/**
 * A listener in the workspace (SSH tcpip-forward and streamlocal-forward): on host:port (port 0:
 * any free port) or on a unix socket `path` (relative: to HOME). Exactly one of `port` and `path`.
 */
export const listenOpenSchema = z
  .object({
    kind: z.literal('listen'),
    host: z.string().min(1).max(255).default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).optional(),
    path: z.string().min(1).max(4096).optional(),
  })
  .refine((spec) => (spec.port === undefined) !== (spec.path === undefined), 'A listen channel names either a port or a unix socket path.');
/** One line (JSON, newline-terminated) of a `listen` channel's DATA towards the server. */
export const listenRecordSchema = z.discriminatedUnion('type', [
  /** the first record: the listener is bound (port: the bound port, null for a unix socket) */
  z.object({ type: z.literal('listening'), port: z.number().int().min(1).max(65535).nullable() }),
  /** a connection arrived; the server claims it with a tcp channel `{ accepted: connection }` within LISTEN_CLAIM_MS or it is dropped */
  z.object({ type: z.literal('accepted'), connection: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER), originAddress: z.string().max(256), originPort: z.number().int().min(0).max(65535) }),
]);
export type ListenRecord = z.infer<typeof listenRecordSchema>;
/** The longest line a listen channel carries; a longer one is a protocol violation. */
export const MAX_LISTEN_RECORD_BYTES = 4096;
/** How long an accepted connection waits for the server to claim it before the agent drops it. */
export const LISTEN_CLAIM_MS = 10_000;
export const channelSpecSchema = z.union([execOpenSchema, terminalOpenSchema, terminalAdminOpenSchema, tcpOpenSchema, listenOpenSchema, syncSourceOpenSchema, syncTargetOpenSchema]);
export type ChannelSpec = z.infer<typeof channelSpecSchema>;
export type ExecOpen = z.infer<typeof execOpenSchema>;
export type TcpOpen = z.infer<typeof tcpOpenSchema>;
export type ListenOpen = z.infer<typeof listenOpenSchema>;

const osInfo = z.object({
  platform: z.string().max(64),
  arch: z.string().max(64),
  release: z.string().max(256),
  hostname: z.string().max(256),
});

export const controlFrameSchema = z.discriminatedUnion('type', [
  // link level
  z.object({
    type: z.literal('hello'),
    protocol: versionSchema,
    agentVersion: z.string().max(64),
    /** random per agent process: log sequence numbers are per instance */
    instance: z.string().min(1).max(64),
    os: osInfo,
    /** the agent's current lifecycle state (not `starting` after a reconnect) */
    state: lifecycleStateSchema,
    /** true once the agent has run (or is running) the startup scripts of this process */
    startupBegun: z.boolean(),
  }),
  z.object({
    type: z.literal('welcome'),
    protocol: versionSchema,
    workspace: z.object({ id: z.string(), name: z.string(), ownerName: z.string() }),
    buildId: z.string(),
    manifest: agentManifestSchema,
    /** how often the server pings; the agent reconnects after 3 missed intervals */
    heartbeatMs: z.number().int().min(10).max(600_000),
  }),
  z.object({ type: z.literal('lifecycle'), state: lifecycleStateSchema, message: z.string().max(4096).optional() }),
  z.object({
    type: z.literal('log'),
    /** per agent process, increasing; the server acks so the agent can resend after a reconnect */
    seq: z.number().int().min(1),
    script: name,
    stream: z.enum(['stdout', 'stderr', 'system']),
    lines: z.array(z.string().max(16 * 1024)).min(1).max(1000),
  }),
  z.object({ type: z.literal('log_ack'), seq: z.number().int().min(0) }),
  z.object({ type: z.literal('ping'), id: z.number().int().min(0) }),
  z.object({ type: z.literal('pong'), id: z.number().int().min(0) }),
  z.object({ type: z.literal('shutdown'), graceful: z.boolean(), reason: z.string().max(1024).optional() }),
  z.object({ type: z.literal('error'), code: z.string().max(64), message: z.string().max(4096) }),
  // channels
  z.object({ type: z.literal('open'), channel: channelId, window: windowSize, spec: channelSpecSchema }),
  z.object({ type: z.literal('open_ok'), channel: channelId, window: windowSize }),
  z.object({ type: z.literal('open_error'), channel: channelId, code: z.string().max(64), message: z.string().max(4096) }),
  z.object({ type: z.literal('eof'), channel: channelId }),
  z.object({
    type: z.literal('close'),
    channel: channelId,
    /** exec: exit code, 128 + signal number when killed by a signal */
    exitCode: z.number().int().min(0).max(255).optional(),
    signal: z.string().max(32).optional(),
    /** set when the channel ended abnormally */
    error: z.object({ code: z.string().max(64), message: z.string().max(4096) }).optional(),
  }),
  z.object({ type: z.literal('signal'), channel: channelId, signal: z.string().regex(/^SIG[A-Z0-9]+$/).max(32) }),
  z.object({ type: z.literal('resize'), channel: channelId, cols: z.number().int().min(1).max(1000), rows: z.number().int().min(1).max(1000) }),
]);

export type ControlFrame = z.infer<typeof controlFrameSchema>;
export type ControlFrameOf<T extends ControlFrame['type']> = Extract<ControlFrame, { type: T }>;
/**
 * `headroom`: the CHANNEL_HEADER_BYTES before `payload` in its buffer are the sender's to
 * overwrite, so the frame is encoded around the payload instead of copied (a relayed frame, or
 * one built with room for its header). Never set on the wire.
 */
export type DataFrame = { type: 'data' | 'stderr'; channel: number; payload: Uint8Array; headroom?: boolean };
export type WindowFrame = { type: 'window'; channel: number; bytes: number };
export type AgentFrame = ControlFrame | DataFrame | WindowFrame;

/** A frame that could not be decoded; the message says what was wrong, never crashes the reader. */
export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

/** Encodes a frame as a websocket message: a string for control frames, bytes for channel frames. */
export function encodeFrame(frame: AgentFrame): string | Uint8Array {
  switch (frame.type) {
    case 'data':
    case 'stderr': {
      if (frame.payload.byteLength > MAX_BULK_DATA_PAYLOAD) throw new FrameError(`A data frame carries at most ${MAX_BULK_DATA_PAYLOAD} bytes; split the write.`);
      if (frame.headroom && frame.payload.byteOffset >= CHANNEL_HEADER_BYTES) {
        const around = new Uint8Array(frame.payload.buffer, frame.payload.byteOffset - CHANNEL_HEADER_BYTES, CHANNEL_HEADER_BYTES + frame.payload.byteLength);
        writeHeader(around, FRAME_TYPE[frame.type], frame.channel);
        return around;
      }
      const out = new Uint8Array(CHANNEL_HEADER_BYTES + frame.payload.byteLength);
      writeHeader(out, FRAME_TYPE[frame.type], frame.channel);
      out.set(frame.payload, CHANNEL_HEADER_BYTES);
      return out;
    }
    case 'window': {
      const out = new Uint8Array(CHANNEL_HEADER_BYTES + 4);
      writeHeader(out, FRAME_TYPE.window, frame.channel);
      new DataView(out.buffer).setUint32(CHANNEL_HEADER_BYTES, frame.bytes);
      return out;
    }
    default:
      return JSON.stringify(frame);
  }
}

/** Decodes one websocket message; throws FrameError for truncated, oversized or malformed frames. */
export function decodeFrame(message: string | Uint8Array): AgentFrame {
  if (typeof message === 'string') return decodeControl(message);
  if (message.byteLength < CHANNEL_HEADER_BYTES) throw new FrameError(`A binary frame is ${message.byteLength} bytes, shorter than its ${CHANNEL_HEADER_BYTES}-byte header.`);
  const view = new DataView(message.buffer, message.byteOffset, message.byteLength);
  const type = view.getUint8(0);
  const channel = view.getUint32(1);
  if (channel === 0) throw new FrameError('A binary frame names channel 0, which does not exist.');
  const payload = message.subarray(CHANNEL_HEADER_BYTES);
  switch (type) {
    case FRAME_TYPE.data:
    case FRAME_TYPE.stderr:
      // the credit of the channel bounds what a peer can make us hold; this bounds one frame
      if (payload.byteLength > MAX_BULK_DATA_PAYLOAD) throw new FrameError(`A data frame carries ${payload.byteLength} bytes; the maximum is ${MAX_BULK_DATA_PAYLOAD}.`);
      return { type: type === FRAME_TYPE.data ? 'data' : 'stderr', channel, payload };
    case FRAME_TYPE.window: {
      if (payload.byteLength !== 4) throw new FrameError(`A window frame must carry 4 bytes, not ${payload.byteLength}.`);
      const bytes = view.getUint32(CHANNEL_HEADER_BYTES);
      if (bytes === 0 || bytes > MAX_CHANNEL_WINDOW) throw new FrameError(`A window frame grants ${bytes} bytes; grants are 1..${MAX_CHANNEL_WINDOW}.`);
      return { type: 'window', channel, bytes };
    }
    default:
      throw new FrameError(`Unknown binary frame type 0x${type.toString(16).padStart(2, '0')}.`);
  }
}

/** Reads only the protocol version of a hello, so a newer agent's hello that fails the full schema still gets a clear refusal. */
export function helloVersion(message: string): { major: number; minor: number } | undefined {
  try {
    const parsed = z.object({ type: z.literal('hello'), protocol: versionSchema }).safeParse(JSON.parse(message));
    return parsed.success ? parsed.data.protocol : undefined;
  } catch {
    return undefined;
  }
}

export function isProtocolSupported(version: { major: number }): boolean {
  return version.major === AGENT_PROTOCOL.major;
}

function decodeControl(message: string): ControlFrame {
  const parsed = parseJsonFrame(message, MAX_CONTROL_FRAME_BYTES, controlFrameSchema, 'control frame');
  if (!parsed.ok) throw new FrameError(parsed.message);
  return parsed.value;
}

function writeHeader(out: Uint8Array, type: number, channel: number): void {
  if (!Number.isInteger(channel) || channel < 1 || channel > 0xffffffff) throw new FrameError(`Channel id ${channel} is outside 1..2^32-1.`);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  view.setUint8(0, type);
  view.setUint32(1, channel);
}
