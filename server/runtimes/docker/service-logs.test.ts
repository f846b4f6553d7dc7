import { describe, expect, it } from 'vitest';
import { framedLines } from './service-logs.ts';

/** Docker's log framing: stream byte, three zero bytes, payload size (u32 BE), payload. */
function frame(stream: 1 | 2, text: string): Buffer {
  const payload = Buffer.from(text);
  const header = Buffer.alloc(8);
  header[0] = stream;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

describe('framedLines', () => {
  it('splits frames into lines that keep their stream, joining a line split across frames', () => {
    const buffer = Buffer.concat([frame(1, 'one\ntw'), frame(2, 'oops\n'), frame(1, 'o\r\n'), frame(1, 'last')]);
    expect(framedLines(buffer)).toEqual([
      { stream: 'stdout', line: 'one' },
      { stream: 'stderr', line: 'oops' },
      { stream: 'stdout', line: 'two' },
      { stream: 'stdout', line: 'last' },
    ]);
  });

  it('reads a log without framing (a container with a TTY) as stdout lines', () => {
    expect(framedLines(Buffer.from('plain text\nsecond line\n'))).toEqual([
      { stream: 'stdout', line: 'plain text' },
      { stream: 'stdout', line: 'second line' },
    ]);
  });
});
