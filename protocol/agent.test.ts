import { describe, expect, it } from 'vitest';
import {
  AGENT_PROTOCOL,
  CHANNEL_HEADER_BYTES,
  MAX_CHANNEL_WINDOW,
  MAX_CONTROL_FRAME_BYTES,
  MAX_BULK_DATA_PAYLOAD,
  MAX_DATA_PAYLOAD,
  FrameError,
  decodeFrame,
  encodeFrame,
  helloVersion,
  isProtocolSupported,
  type AgentFrame,
} from './agent.ts';

const controlFrames: AgentFrame[] = [
  {
    type: 'hello',
    protocol: AGENT_PROTOCOL,
    agentVersion: '0.1.0',
    instance: 'abc',
    os: { platform: 'linux', arch: 'x64', release: '6.1', hostname: 'ws' },
    state: 'starting',
    startupBegun: false,
  },
  {
    type: 'welcome',
    protocol: AGENT_PROTOCOL,
    workspace: { id: 'w1', name: 'demo', ownerName: 'alice' },
    buildId: 'b1',
    manifest: { env: { A: '1' }, startupScripts: [{ name: 's', run: 'echo hi', timeoutMs: 1000, blocking: true }], apps: [{ name: 'web', port: 3000 }] },
    heartbeatMs: 15_000,
  },
  { type: 'lifecycle', state: 'start_error', message: "Startup script 's' exited with code 3." },
  { type: 'log', seq: 1, script: 's', stream: 'stderr', lines: ['a', 'b'] },
  { type: 'log_ack', seq: 1 },
  { type: 'ping', id: 7 },
  { type: 'pong', id: 7 },
  { type: 'shutdown', graceful: true, reason: 'stop' },
  { type: 'error', code: 'AGENT_PROTOCOL_UNSUPPORTED', message: 'no' },
  { type: 'open', channel: 1, window: 65536, spec: { kind: 'exec', command: ['ls', '-l'], env: { X: 'y' }, cwd: '/tmp', tty: { cols: 80, rows: 24 } } },
  { type: 'open', channel: 3, window: 1024, spec: { kind: 'tcp', host: '127.0.0.1', port: 8080 } },
  { type: 'open', channel: 5, window: 1024, spec: { kind: 'terminal', sessionId: 's1', cols: 100, rows: 40 } },
  { type: 'open', channel: 7, window: 1024, spec: { kind: 'listen', host: '127.0.0.1', port: 0 } },
  { type: 'open', channel: 9, window: 1024, spec: { kind: 'listen', host: '127.0.0.1', path: 'app.sock' } },
  { type: 'open', channel: 11, window: 1024, spec: { kind: 'tcp', host: '127.0.0.1', accepted: 4 } },
  { type: 'open', channel: 13, window: 2 * 1024 * 1024, spec: { kind: 'tcp', host: '127.0.0.1', port: 3000, maxData: MAX_BULK_DATA_PAYLOAD } },
  { type: 'open_ok', channel: 1, window: 65536 },
  { type: 'open_error', channel: 1, code: 'EXEC_FAILED', message: 'not found' },
  { type: 'eof', channel: 1 },
  { type: 'close', channel: 1, exitCode: 143, signal: 'SIGTERM' },
  { type: 'signal', channel: 1, signal: 'SIGINT' },
  { type: 'resize', channel: 1, cols: 120, rows: 30 },
];

describe('agent frame codec', () => {
  it.each(controlFrames.map((frame) => [frame.type, frame] as const))('round-trips a %s control frame as JSON text', (_type, frame) => {
    const encoded = encodeFrame(frame);
    expect(typeof encoded).toBe('string');
    expect(decodeFrame(encoded)).toEqual(frame);
  });

  it('round-trips data, stderr and window frames with a 5-byte header', () => {
    const payload = new Uint8Array([0, 1, 2, 255]);
    for (const frame of [
      { type: 'data', channel: 1, payload },
      { type: 'stderr', channel: 0xffffffff, payload },
      { type: 'data', channel: 9, payload: new Uint8Array(0) },
    ] as const) {
      const encoded = encodeFrame(frame) as Uint8Array;
      expect(encoded.byteLength).toBe(CHANNEL_HEADER_BYTES + frame.payload.byteLength);
      expect(decodeFrame(encoded)).toEqual(frame);
    }
    const window = encodeFrame({ type: 'window', channel: 3, bytes: 4096 }) as Uint8Array;
    expect(window.byteLength).toBe(9);
    expect(decodeFrame(window)).toEqual({ type: 'window', channel: 3, bytes: 4096 });
  });

  it('decodes a frame that sits at an offset inside a larger buffer (as ws hands them over)', () => {
    const encoded = encodeFrame({ type: 'data', channel: 5, payload: new Uint8Array([9, 8, 7]) }) as Uint8Array;
    const pool = new Uint8Array(100);
    pool.set(encoded, 40);
    expect(decodeFrame(pool.subarray(40, 40 + encoded.byteLength))).toEqual({ type: 'data', channel: 5, payload: new Uint8Array([9, 8, 7]) });
  });

  it('applies manifest defaults (blocking scripts, 5 minute timeout, empty env and apps)', () => {
    const frame = decodeFrame(JSON.stringify({ ...controlFrames[1], manifest: { startupScripts: [{ name: 's', run: 'true' }] } }));
    expect(frame).toMatchObject({ manifest: { env: {}, apps: [], startupScripts: [{ name: 's', run: 'true', blocking: true, timeoutMs: 300_000 }] } });
  });

  it.each([
    ['an empty binary frame', new Uint8Array(0), 'shorter than its 5-byte header'],
    ['a truncated header', new Uint8Array([1, 0, 0]), 'shorter than its 5-byte header'],
    ['channel 0', new Uint8Array([1, 0, 0, 0, 0, 42]), 'channel 0'],
    ['an unknown frame type', new Uint8Array([0x42, 0, 0, 0, 1]), 'Unknown binary frame type 0x42'],
    ['a truncated window frame', new Uint8Array([3, 0, 0, 0, 1, 0, 0]), 'must carry 4 bytes'],
    ['a zero window grant', new Uint8Array([3, 0, 0, 0, 1, 0, 0, 0, 0]), 'grants 0 bytes'],
    ['an oversized data frame', new Uint8Array(CHANNEL_HEADER_BYTES + MAX_BULK_DATA_PAYLOAD + 1).fill(1, 0, 1).fill(1, 4, 5), 'the maximum is'],
  ])('rejects %s with a FrameError', (_name, bytes, message) => {
    expect(() => decodeFrame(bytes)).toThrow(FrameError);
    expect(() => decodeFrame(bytes)).toThrow(message);
  });

  it.each([
    ['text that is not JSON', '{"type": "ping", '],
    ['JSON that is not an object', '42'],
    ['an unknown type', '{"type":"teleport"}'],
    ['a wrong field type', '{"type":"ping","id":"seven"}'],
    ['an unknown lifecycle state', '{"type":"lifecycle","state":"exploded"}'],
    ['an exec without a command', '{"type":"open","channel":1,"window":10,"spec":{"kind":"exec","command":[]}}'],
    ['a window above the maximum', `{"type":"open_ok","channel":1,"window":${MAX_CHANNEL_WINDOW + 1}}`],
    ['a channel id above u32', '{"type":"eof","channel":4294967296}'],
    ['an oversized control frame', JSON.stringify({ type: 'error', code: 'X', message: 'x'.repeat(MAX_CONTROL_FRAME_BYTES) })],
  ])('rejects %s with a FrameError', (_name, text) => {
    expect(() => decodeFrame(text)).toThrow(FrameError);
  });

  it('never throws anything but FrameError on random bytes and random text', () => {
    let seed = 1;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let i = 0; i < 2000; i++) {
      const bytes = new Uint8Array(Math.floor(random() * 40)).map(() => Math.floor(random() * 256));
      if (bytes.byteLength > 0) bytes[0] = Math.floor(random() * 5);
      for (const input of [bytes, new TextDecoder().decode(bytes)]) {
        try {
          decodeFrame(input);
        } catch (error) {
          expect(error).toBeInstanceOf(FrameError);
        }
      }
    }
  });

  it('refuses a tcp open naming more or less than one target, and a listen open naming both a port and a path', () => {
    const open = (spec: object) => () => decodeFrame(JSON.stringify({ type: 'open', channel: 1, window: 1024, spec }));
    expect(open({ kind: 'tcp', port: 80, accepted: 3 })).toThrow(FrameError);
    expect(open({ kind: 'tcp', path: 'a.sock', accepted: 3 })).toThrow(FrameError);
    expect(open({ kind: 'tcp' })).toThrow(FrameError);
    // 1.8: a declared maxData between the classic and the bulk frame size
    expect(open({ kind: 'tcp', port: 80, maxData: MAX_DATA_PAYLOAD - 1 })).toThrow(FrameError);
    expect(open({ kind: 'tcp', port: 80, maxData: MAX_BULK_DATA_PAYLOAD + 1 })).toThrow(FrameError);
    expect(open({ kind: 'listen', port: 80, path: 'a.sock' })).toThrow(FrameError);
    expect(open({ kind: 'listen' })).toThrow(FrameError);
    expect(open({ kind: 'listen', port: 65536 })).toThrow(FrameError);
  });

  it('refuses to encode frames it could not decode', () => {
    expect(() => encodeFrame({ type: 'data', channel: 0, payload: new Uint8Array(1) })).toThrow(FrameError);
    expect(() => encodeFrame({ type: 'data', channel: 1, payload: new Uint8Array(MAX_BULK_DATA_PAYLOAD + 1) })).toThrow(FrameError);
  });

  it('carries a bulk data frame (1.8) that fills the websocket limit of every end of the link exactly', () => {
    const payload = new Uint8Array(MAX_BULK_DATA_PAYLOAD).fill(7);
    const encoded = encodeFrame({ type: 'data', channel: 9, payload }) as Uint8Array;
    expect(encoded.byteLength).toBe(MAX_CONTROL_FRAME_BYTES);
    expect(decodeFrame(encoded)).toEqual({ type: 'data', channel: 9, payload });
  });

  it('reads the version of a hello it cannot otherwise parse, so newer agents get a clear refusal', () => {
    expect(helloVersion(JSON.stringify({ type: 'hello', protocol: { major: 2, minor: 5 }, somethingNew: true }))).toEqual({ major: 2, minor: 5 });
    expect(helloVersion('{"type":"ping","id":1}')).toBeUndefined();
    expect(helloVersion('garbage')).toBeUndefined();
    expect(isProtocolSupported({ major: AGENT_PROTOCOL.major })).toBe(true);
    expect(isProtocolSupported({ major: AGENT_PROTOCOL.major + 1 })).toBe(false);
  });
});
