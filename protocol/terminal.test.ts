import { describe, expect, it } from 'vitest';
import {
  BINARY_TYPE,
  decodeClientMessage,
  decodeServerMessage,
  encodeClientMessage,
  encodeServerMessage,
  isTerminalProtocolSupported,
  MAX_CLIENT_TEXT_BYTES,
  MAX_DATA_PAYLOAD,
  TerminalFrameError,
} from './terminal.ts';

describe('terminal protocol', () => {
  it('round-trips every message kind through encode and decode', () => {
    const bytes = new Uint8Array([0, 1, 2, 0x1b, 255]);
    expect(decodeClientMessage(encodeClientMessage({ type: 'input', data: bytes }))).toEqual({ type: 'input', data: bytes });
    expect(decodeClientMessage(encodeClientMessage({ type: 'input', data: 'ls\r' }))).toEqual({ type: 'input', data: 'ls\r' });
    expect(decodeClientMessage(encodeClientMessage({ type: 'attach', sessionId: 'a-1', cols: 80, rows: 24 }))).toEqual({ type: 'attach', sessionId: 'a-1', cols: 80, rows: 24 });
    expect(decodeClientMessage(encodeClientMessage({ type: 'ack', bytes: 16384 }))).toEqual({ type: 'ack', bytes: 16384 });
    expect(decodeClientMessage('{"type":"close"}')).toEqual({ type: 'close' });
    expect(decodeServerMessage(encodeServerMessage({ type: 'output', data: bytes }))).toEqual({ type: 'output', data: bytes });
    const attached = { type: 'attached', protocol: { major: 1, minor: 0 }, sessionId: 's', cols: 80, rows: 24, snapshot: '\x1b[?1049h' } as const;
    expect(decodeServerMessage(encodeServerMessage(attached))).toEqual(attached);
    expect(decodeServerMessage(encodeServerMessage({ type: 'exit', code: 130, signal: 2 }))).toEqual({ type: 'exit', code: 130, signal: 2 });
  });

  it('clamps resize to 0x0 and 100000x100000 into 2..1000 x 1..500 instead of refusing', () => {
    expect(decodeClientMessage('{"type":"resize","cols":0,"rows":0}')).toEqual({ type: 'resize', cols: 2, rows: 1 });
    expect(decodeClientMessage('{"type":"resize","cols":100000,"rows":100000}')).toEqual({ type: 'resize', cols: 1000, rows: 500 });
    expect(decodeClientMessage('{"type":"resize","cols":-5,"rows":80.7}')).toEqual({ type: 'resize', cols: 2, rows: 80 });
    expect(decodeClientMessage('{"type":"attach","cols":1e308,"rows":1e308}')).toEqual({ type: 'attach', cols: 1000, rows: 500 });
  });

  it('rejects garbage, unknown types and oversized messages with TerminalFrameError only', () => {
    const garbage: Array<string | Uint8Array> = [
      new Uint8Array([]),
      new Uint8Array([0x07, 1, 2]),
      new Uint8Array([BINARY_TYPE.output, 1]),
      new Uint8Array(MAX_DATA_PAYLOAD + 2),
      'not json',
      '[]',
      'null',
      '{"type":"nope"}',
      '{"type":"resize","cols":"80","rows":24}',
      '{"type":"ack","bytes":-1}',
      '{"type":"attach","sessionId":"../../etc","cols":80,"rows":24}',
      JSON.stringify({ type: 'input', data: 'x'.repeat(MAX_CLIENT_TEXT_BYTES) }),
    ];
    for (const message of garbage) expect(() => decodeClientMessage(message), String(message).slice(0, 40)).toThrow(TerminalFrameError);
    expect(() => encodeClientMessage({ type: 'input', data: new Uint8Array(MAX_DATA_PAYLOAD + 1) })).toThrow(TerminalFrameError);
  });

  it('accepts protocol major 1 and an absent version, refuses other majors', () => {
    expect(isTerminalProtocolSupported(undefined)).toBe(true);
    expect(isTerminalProtocolSupported({ major: 1 })).toBe(true);
    expect(isTerminalProtocolSupported({ major: 2 })).toBe(false);
  });
});
