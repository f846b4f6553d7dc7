import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as pty from 'node-pty';
import { afterAll, describe, expect, it } from 'vitest';
import { PtyWriter } from './pty-writer.ts';

const dir = mkdtempSync(join(tmpdir(), 'den-pty-writer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A program on a raw pty (no echo, no line editing) that waits for `go` to exist, then copies its input to `out`. */
function rawCopy(out: string, go: string): pty.IPty {
  const script = `stty raw -echo; printf ready; while [ ! -e '${go}' ]; do sleep 0.02; done; exec cat > '${out}'`;
  return pty.spawn('/bin/sh', ['-c', script], { cols: 80, rows: 24, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
}

function readyOf(terminal: pty.IPty): Promise<void> {
  return new Promise((resolve) => {
    let seen = '';
    const listener = terminal.onData((text) => {
      seen += text;
      if (seen.includes('ready')) {
        listener.dispose();
        resolve();
      }
    });
  });
}

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('PtyWriter', () => {
  it('writes on the calling thread, in order, and queues what a program that is not reading leaves', async () => {
    const out = join(dir, 'out.bin');
    const go = join(dir, 'go');
    const terminal = rawCopy(out, go);
    await readyOf(terminal);
    const writer = new PtyWriter(terminal);

    // a keystroke goes in at once: its `done` runs before write() returns
    let keystrokeDone = false;
    writer.write(Uint8Array.of(0x61), () => (keystrokeDone = true));
    expect(keystrokeDone).toBe(true);

    // 256 KiB in 64 chunks is far more than a pty's input buffer: write() must not block, the rest waits
    const chunks = Array.from({ length: 64 }, (_, i) => Buffer.alloc(4096, 0x41 + (i % 26)));
    let done = 0;
    for (const chunk of chunks) writer.write(chunk, () => done++);
    // the caller reuses its buffers: what waits must be a copy
    for (const chunk of chunks) chunk.fill(0x7a);
    expect(writer.queuedBytes).toBeGreaterThan(0);
    expect(done).toBeLessThan(chunks.length);

    // the program starts reading: everything arrives, in order, and every `done` runs
    writeFileSync(go, '');
    const expected = Buffer.concat([Buffer.of(0x61), ...chunks.map((_, i) => Buffer.alloc(4096, 0x41 + (i % 26)))]);
    await until(() => done === chunks.length, 'every chunk to be written');
    expect(writer.queuedBytes).toBe(0);
    await until(() => statSync(out, { throwIfNoEntry: false })?.size === expected.length, 'the copy to be complete');
    expect(readFileSync(out).equals(expected)).toBe(true);
    terminal.kill('SIGKILL');
  });

  it('drops input once the program is gone, and still calls `done`', async () => {
    const terminal = pty.spawn('/bin/sh', ['-c', 'exit 0'], { cols: 80, rows: 24, env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    const writer = new PtyWriter(terminal);
    await new Promise<void>((resolve) => terminal.onExit(() => resolve()));
    let done = false;
    expect(() => writer.write(Buffer.from('late'), () => (done = true))).not.toThrow();
    expect(done).toBe(true);
    expect(writer.queuedBytes).toBe(0);
  });
});
