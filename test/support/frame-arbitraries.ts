import fc from 'fast-check';
import { encodeFrame, type AgentFrame, type ChannelSpec } from '../../protocol/agent.ts';
import { encodeExecData } from '../../protocol/exec-frames.ts';
import { BINARY_TYPE, encodeRecord } from '../../protocol/terminal.ts';

/**
 * fast-check arbitraries for every websocket protocol of den: well-formed frames, frames with one
 * field replaced by hostile JSON, raw text and raw bytes, in any order. Channel frames name a
 * channel by a small index (`ChannelRef`) that the test resolves against the channels it has
 * seen, so out-of-order frames hit live channels rather than only unknown ids.
 */

/** Values that have broken parsers before: objects whose toString is not callable, prototype keys, huge and odd numbers. */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(
    { toString: 1 }, [{ toString: 1 }], { valueOf: 1, toString: 1 }, { __proto__: { x: 1 } }, JSON.parse('{"__proto__":{"polluted":1}}'),
    { constructor: { prototype: { polluted: 1 } } }, null, true, -1, 0, 1e308, -1e308, 2 ** 32, 2 ** 53 + 1, 0.5, '', '\u0000', '\uD800', 'x'.repeat(70_000), [], {},
  ),
  fc.jsonValue({ maxDepth: 3 }),
);

/** A JSON text of `frame` with one top-level field replaced, removed or added. */
export function mutatedJson(frame: fc.Arbitrary<Record<string, unknown>>): fc.Arbitrary<string> {
  return fc.tuple(frame, fc.nat(), fc.constantFrom('replace', 'delete', 'add'), hostileValue, fc.constantFrom('type', 'channel', 'extra', 'window', 'spec', 'bytes')).map(([base, index, op, value, added]) => {
    const copy: Record<string, unknown> = { ...base };
    const keys = Object.keys(copy);
    const key = keys[index % keys.length];
    if (op === 'replace') copy[key] = value;
    else if (op === 'delete') delete copy[key];
    else copy[added] = value;
    return JSON.stringify(copy) ?? 'null';
  });
}

/** A frame whose `type` itself is hostile (the discriminator is what parsers look at first), with `fields` beside it. */
export function hostileTyped(fields: Record<string, unknown>): fc.Arbitrary<string> {
  return hostileValue.map((type) => JSON.stringify({ ...fields, type }));
}

/** Raw websocket messages: any text, JSON of any shape, any bytes. */
export const rawMessage: fc.Arbitrary<string | Uint8Array> = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.string({ unit: 'binary', maxLength: 200 }),
  hostileValue.map((value) => JSON.stringify(value) ?? 'null'),
  fc.uint8Array({ maxLength: 300 }),
);

// ---------------------------------------------------------------------------- agent link

/** An index into the channels a test has seen, newest first, resolved modulo their count; -1 asks for a new channel. */
export type ChannelRef = number;
/** One websocket message of the agent link, built once the test knows which channels exist. */
export type LinkMessage = { build(channel: (ref: ChannelRef) => number): string | Uint8Array; describe: string };

/** Mostly the newest channel (0), so sequences of frames hit one live channel in every order. */
const ref = fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat({ max: 7 }) });
const smallBytes = fc.uint8Array({ maxLength: 2048 });
/** Codes and messages: any code points, so byte limits (a close reason is at most 123 bytes) are hit by multi-byte text. */
const shortText = fc.string({ unit: 'binary', maxLength: 40 });

/** Frames an agent could send to the server about channels (valid shapes, any order, any channel). */
const agentChannelFrame: fc.Arbitrary<LinkMessage> = fc.oneof(
  fc.record({ r: ref, w: fc.nat({ max: 16 * 1024 * 1024 }) }).map(({ r, w }) => frame((c) => ({ type: 'open_ok', channel: c(r), window: w }))),
  fc.record({ r: ref, code: shortText, message: shortText }).map(({ r, code, message }) => frame((c) => ({ type: 'open_error', channel: c(r), code, message }))),
  fc.record({ r: ref, payload: smallBytes, stderr: fc.boolean() }).map(({ r, payload, stderr }) => frame((c) => ({ type: stderr ? 'stderr' : 'data', channel: c(r), payload }))),
  fc.record({ r: ref, bytes: fc.integer({ min: 1, max: 16 * 1024 * 1024 }) }).map(({ r, bytes }) => frame((c) => ({ type: 'window', channel: c(r), bytes }))),
  ref.map((r) => frame((c) => ({ type: 'eof', channel: c(r) }))),
  fc.record({ r: ref, exitCode: fc.option(fc.integer({ min: 0, max: 255 }), { nil: undefined }), error: fc.option(fc.record({ code: shortText, message: shortText }), { nil: undefined }) })
    .map(({ r, exitCode, error }) => frame((c) => ({ type: 'close', channel: c(r), ...(exitCode === undefined ? {} : { exitCode }), ...(error ? { error } : {}) }))),
  // a terminal channel's records, well-formed or not, for the relay's record reader
  fc.record({ r: ref, record: fc.oneof(fc.string({ maxLength: 100 }).map((text) => encodeRecord(text)), fc.uint8Array({ maxLength: 64 }).map((bytes) => encodeRecord(bytes)), fc.uint8Array({ minLength: 5, maxLength: 40 })) })
    .map(({ r, record }) => frame((c) => ({ type: 'data', channel: c(r), payload: record }))),
);

/** Link-level frames an agent could send (the handshake again, lifecycle, logs, pings, things only a server sends). */
const agentLinkFrame: fc.Arbitrary<LinkMessage> = fc.oneof(
  fc.constantFrom<AgentFrame>(
    { type: 'ping', id: 1 }, { type: 'pong', id: 2 }, { type: 'lifecycle', state: 'ready' }, { type: 'lifecycle', state: 'start_error', message: 'fuzz' },
    { type: 'log_ack', seq: 3 }, { type: 'error', code: 'X', message: 'fuzz' }, { type: 'shutdown', graceful: true },
    { type: 'hello', protocol: { major: 1, minor: 9 }, agentVersion: 'x', instance: 'again', os: { platform: 'p', arch: 'a', release: 'r', hostname: 'h' }, state: 'ready', startupBegun: true },
  ).map((f) => frame(() => f)),
  fc.record({ seq: fc.integer({ min: 1, max: 2 ** 40 }), lines: fc.array(fc.string({ maxLength: 60 }), { minLength: 1, maxLength: 5 }), stream: fc.constantFrom('stdout', 'stderr', 'system') as fc.Arbitrary<'stdout'> })
    .map(({ seq, lines, stream }) => frame(() => ({ type: 'log', seq, script: 'fuzz', stream, lines }))),
  fc.record({ r: ref, spec: fc.constant({ kind: 'exec', command: ['true'] } as ChannelSpec) }).map(({ r, spec }) => frame((c) => ({ type: 'open', channel: c(r) + 1, window: 1024, spec }))),
);

/** Anything an agent could send: valid frames in any order, mutated control frames, binary frames with odd headers, raw garbage. */
export const agentMessage: fc.Arbitrary<LinkMessage> = fc.oneof(
  { weight: 5, arbitrary: agentChannelFrame },
  { weight: 2, arbitrary: agentLinkFrame },
  { weight: 1, arbitrary: hostileTyped({ channel: 1, window: 1 }).map(raw) },
  { weight: 2, arbitrary: mutatedJson(fc.constantFrom({ type: 'open_ok', channel: 1, window: 1 }, { type: 'close', channel: 1, exitCode: 0 }, { type: 'log', seq: 1, script: 's', stream: 'stdout', lines: ['x'] }, { type: 'lifecycle', state: 'ready' })).map(raw) },
  { weight: 1, arbitrary: fc.record({ type: fc.integer({ min: 0, max: 255 }), r: ref, payload: fc.uint8Array({ maxLength: 16 }) }).map(({ type, r, payload }) => binaryFrame(type, r, payload)) },
  { weight: 1, arbitrary: rawMessage.map(raw) },
);

/** Frames a (possibly compromised) server could send to an agent. Exec and terminal channels only ever run the harmless commands given. */
export function serverMessage(safeCommands: string[][]): fc.Arbitrary<LinkMessage> {
  const command = fc.constantFrom(...safeCommands);
  const size = fc.integer({ min: 1, max: 1000 });
  // environment names with '=' or NUL, and directories that do not exist or are not paths, must fail the open, not the agent
  const env = fc.option(fc.dictionary(fc.oneof(fc.constantFrom('A', 'A=B', 'A\u0000', 'PATH', 'LD_PRELOAD'), shortText.filter((key) => key.length > 0)), fc.oneof(shortText, fc.constant('\u0000')), { maxKeys: 3 }), { nil: undefined });
  const cwd = fc.option(fc.constantFrom('/', '/nonexistent', 'relative', '/tmp\u0000x', '/etc/passwd'), { nil: undefined });
  const spec: fc.Arbitrary<ChannelSpec> = fc.oneof(
    fc.record({ command, env, cwd, tty: fc.option(fc.record({ cols: size, rows: size }), { nil: undefined }) })
      .map(({ command, env, cwd, tty }) => ({ kind: 'exec' as const, command, ...(env ? { env } : {}), ...(cwd ? { cwd } : {}), ...(tty ? { tty } : {}) })),
    fc.record({ command, env, cols: size, rows: size, sessionId: fc.option(fc.constantFrom('s1', 'nope'), { nil: undefined }) })
      .map(({ command, env, cols, rows, sessionId }) => ({ kind: 'terminal' as const, command, cols, rows, ...(env ? { env } : {}), ...(sessionId ? { sessionId } : {}) })),
    fc.constantFrom<ChannelSpec>({ kind: 'terminal-admin', op: 'list' }, { kind: 'terminal-admin', op: 'close', sessionId: 'nope' }, { kind: 'tcp', host: '127.0.0.1', port: 1 }, { kind: 'tcp', host: '127.0.0.1', accepted: 1 }, { kind: 'listen', host: '127.0.0.1', port: 0 }, { kind: 'sync-target', root: '/nonexistent/den-fuzz', exclude: [] }),
  );
  const terminalRecord = fc.oneof(
    fc.constantFrom('{"type":"resize","cols":0,"rows":99999}', '{"type":"ack","bytes":100}', '{"type":"close"}', '{"type":{"toString":1}}', '{"type":"attach","cols":1,"rows":1}', '{"type":"input","data":"x"}'),
    fc.string({ maxLength: 80 }),
  ).map((text) => encodeRecord(text));
  return fc.oneof(
    // mostly a new channel (ref -1), sometimes one that is open already
    { weight: 3, arbitrary: fc.record({ r: fc.oneof({ weight: 4, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: ref }), window: fc.nat({ max: 16 * 1024 * 1024 }), spec })
      .map(({ r, window, spec }) => frame((c) => ({ type: 'open', channel: c(r), window, spec }))) },
    { weight: 3, arbitrary: fc.record({ r: ref, payload: fc.oneof(smallBytes, terminalRecord, fc.constant(Uint8Array.of(BINARY_TYPE.input, 0x41))) }).map(({ r, payload }) => frame((c) => ({ type: 'data', channel: c(r), payload }))) },
    { weight: 2, arbitrary: fc.record({ r: ref, bytes: fc.integer({ min: 1, max: 16 * 1024 * 1024 }) }).map(({ r, bytes }) => frame((c) => ({ type: 'window', channel: c(r), bytes }))) },
    { weight: 2, arbitrary: ref.map((r) => frame((c) => ({ type: 'eof', channel: c(r) }))) },
    { weight: 2, arbitrary: ref.map((r) => frame((c) => ({ type: 'close', channel: c(r) }))) },
    { weight: 1, arbitrary: fc.record({ r: ref, signal: fc.constantFrom('SIGTERM', 'SIGKILL', 'SIGNOPE', 'SIGWINCH', 'SIG0') }).map(({ r, signal }) => frame((c) => ({ type: 'signal', channel: c(r), signal }))) },
    { weight: 1, arbitrary: fc.record({ r: ref, cols: size, rows: size }).map(({ r, cols, rows }) => frame((c) => ({ type: 'resize', channel: c(r), cols, rows }))) },
    { weight: 1, arbitrary: fc.constantFrom<AgentFrame>({ type: 'ping', id: 9 }, { type: 'log_ack', seq: 2 ** 40 }, { type: 'error', code: 'X', message: 'fuzz' }, { type: 'pong', id: 1 }, { type: 'lifecycle', state: 'off' }).map((f) => frame(() => f)) },
    { weight: 1, arbitrary: hostileTyped({ channel: 1 }).map(raw) },
    { weight: 2, arbitrary: mutatedJson(fc.constantFrom({ type: 'open', channel: 1, window: 1024, spec: { kind: 'exec', command: ['true'] } }, { type: 'welcome' }, { type: 'close', channel: 1 }, { type: 'signal', channel: 1, signal: 'SIGTERM' })).map(raw) },
    { weight: 1, arbitrary: fc.record({ type: fc.integer({ min: 0, max: 255 }), r: ref, payload: fc.uint8Array({ maxLength: 16 }) }).map(({ type, r, payload }) => binaryFrame(type, r, payload)) },
    { weight: 1, arbitrary: rawMessage.map(raw) },
  );
}

function linkMessage(build: LinkMessage['build'], describe: () => string): LinkMessage {
  // fast-check prints a counterexample with this, so a failure names the frames, not a closure
  return { build, get describe() { return describe(); }, [fc.toStringMethod]: describe } as LinkMessage;
}

function frame(build: (channel: (ref: ChannelRef) => number) => AgentFrame): LinkMessage {
  return linkMessage((channel) => encodeFrame(build(channel)), () => {
    const sample = build((r) => r + 1);
    return 'payload' in sample ? `${sample.type}(ref ${sample.channel - 1}, ${sample.payload.byteLength} bytes)` : JSON.stringify(sample).slice(0, 200).replace(/"channel":(\d+)/g, (_, id) => `"channel":ref${Number(id) - 1}`);
  });
}

function raw(message: string | Uint8Array): LinkMessage {
  return linkMessage(() => message, () => (typeof message === 'string' ? JSON.stringify(message.slice(0, 200)) : `bytes[${[...message.subarray(0, 32)].join(',')}]`));
}

/** A binary frame with any type byte, on a known channel, with any payload (window frames of the wrong size included). */
function binaryFrame(type: number, r: ChannelRef, payload: Uint8Array): LinkMessage {
  return linkMessage((channel) => {
    const out = new Uint8Array(5 + payload.byteLength);
    const view = new DataView(out.buffer);
    view.setUint8(0, type);
    view.setUint32(1, channel(r));
    out.set(payload, 5);
    return out;
  }, () => `binary(type ${type}, ref ${r}, ${payload.byteLength} bytes)`);
}

// ---------------------------------------------------------------------------- terminal and exec sockets

const cols = fc.oneof(fc.integer({ min: -5, max: 2000 }), fc.constantFrom(1e9, -1e9, 0.5));
/** What a terminal client (browser, CLI, attacker) could send: messages of the protocol in any order, mutated, raw. */
export const terminalClientMessage: fc.Arbitrary<string | Uint8Array> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ cols, rows: cols, command: fc.option(fc.constant(['cat']), { nil: undefined }) }).map(({ cols, rows, command }) => JSON.stringify({ type: 'attach', cols, rows, ...(command ? { command } : {}) })) },
  { weight: 1, arbitrary: fc.constantFrom('{"type":"attach","cols":80,"rows":24,"sessionId":"gone"}', '{"type":"attach","cols":80,"rows":24,"protocol":{"major":9,"minor":0}}') },
  { weight: 2, arbitrary: fc.string({ maxLength: 100 }).map((data) => JSON.stringify({ type: 'input', data })) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 200 }).map((bytes) => Uint8Array.of(BINARY_TYPE.input, ...bytes)) },
  { weight: 1, arbitrary: fc.integer({ min: -1, max: 2 ** 32 }).map((bytes) => JSON.stringify({ type: 'ack', bytes })) },
  { weight: 1, arbitrary: fc.record({ cols, rows: cols }).map(({ cols, rows }) => JSON.stringify({ type: 'resize', cols, rows })) },
  { weight: 1, arbitrary: fc.constant('{"type":"close"}') },
  { weight: 2, arbitrary: hostileTyped({ cols: 80, rows: 24 }) },
  { weight: 3, arbitrary: mutatedJson(fc.constantFrom({ type: 'attach', cols: 80, rows: 24 }, { type: 'input', data: 'x' }, { type: 'ack', bytes: 1 }, { type: 'resize', cols: 1, rows: 1 })) },
  { weight: 2, arbitrary: rawMessage },
);

/** What an exec client could send. Commands come from `safeCommands` (a real agent may run them). */
export function execClientMessage(safeCommands: string[][]): fc.Arbitrary<string | Uint8Array> {
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(...safeCommands).map((command) => JSON.stringify({ type: 'start', command })) },
    { weight: 1, arbitrary: fc.constantFrom('{"type":"stdin_eof"}', '{"type":"signal","signal":"SIGTERM"}', '{"type":"signal","signal":"SIGNOPE"}', '{"type":"resize","cols":10,"rows":10}', '{"type":"start","command":[]}') },
    { weight: 2, arbitrary: fc.record({ stream: fc.integer({ min: 0, max: 5 }), payload: fc.uint8Array({ maxLength: 200 }) }).map(({ stream, payload }) => encodeExecData(stream, payload)) },
    { weight: 1, arbitrary: hostileTyped({ command: ['true'] }) },
    { weight: 2, arbitrary: mutatedJson(fc.constantFrom({ type: 'start', command: ['true'] }, { type: 'signal', signal: 'SIGTERM' }, { type: 'resize', cols: 1, rows: 1 })) },
    { weight: 1, arbitrary: rawMessage },
  );
}
