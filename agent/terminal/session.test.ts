import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { TerminalSession, type TerminalSessionOptions } from './session.ts';
import { ManualTimers, ParsingClient, waitFor } from './testing.ts';

const SHELL_TIMEOUT_MS = 10_000;
const FLOOD_TIMEOUT_MS = 60_000;
// generous: this asserts that Ctrl-C gets through a flood; how fast is bench:terminal's job
const CTRL_C_TIMEOUT_MS = 15_000;

const home = mkdtempSync(join(tmpdir(), 'den-term-'));
const sessions: TerminalSession[] = [];
afterEach(async () => {
  for (const session of sessions.splice(0)) session.close();
});
// retries: a hung-up shell may still write its history while the directory is removed
afterAll(() => rmSync(home, { recursive: true, force: true, maxRetries: 5 }));

function bash(options: Partial<TerminalSessionOptions> = {}): TerminalSession {
  const session = new TerminalSession({
    command: ['bash', '--norc', '--noprofile'],
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, PS1: '$ ', LANG: 'C.UTF-8' },
    cols: 80,
    rows: 24,
    ...options,
  });
  sessions.push(session);
  return session;
}

function attach(session: TerminalSession, cols = 80, rows = 24): ParsingClient {
  const client = new ParsingClient(cols, rows);
  client.attachment = session.attach(client, { cols, rows });
  return client;
}

async function prompt(client: ParsingClient): Promise<void> {
  await waitFor(() => client.snapshot !== undefined, SHELL_TIMEOUT_MS, 'the attached snapshot');
  await waitFor(() => client.text.includes('$ ') || client.snapshot!.includes('$ '), SHELL_TIMEOUT_MS, 'the first prompt');
}

/** Waits until the shell printed nothing for a while and the mirror parsed everything (vim draws in several writes). */
async function quiet(session: TerminalSession): Promise<void> {
  let seen = -1;
  let stableSince = performance.now();
  await waitFor(
    () => {
      if (session.outputBytes !== seen) [seen, stableSince] = [session.outputBytes, performance.now()];
      return performance.now() - stableSince > 300 && session.mirrorBacklogBytes === 0;
    },
    SHELL_TIMEOUT_MS,
    'the session to go quiet',
  );
}

/** Runs a command and waits for a marker that only the command's output contains (the echoed input has `$((...))`). */
async function run(client: ParsingClient, command: string, marker: string, timeoutMs = SHELL_TIMEOUT_MS): Promise<void> {
  client.attachment!.input(`${command}\r`);
  await waitFor(() => client.text.includes(marker), timeoutMs, `output '${marker}' of: ${command}`);
}

describe('TerminalSession', () => {
  it('echoes input typed into the shell back to the client', async () => {
    const client = attach(bash());
    await prompt(client);
    await run(client, 'echo hi-$((1+2))', 'hi-3');
    expect(client.text).toContain('echo hi-$((1+2))');
  });

  it('restores an identical screen from the snapshot in a fresh terminal after output', async () => {
    const session = bash();
    const first = attach(session);
    await prompt(first);
    await run(first, 'for i in $(seq 1 300); do printf "\\e[3$((i%7))mline %d\\e[0m\\n" $i; done; echo DONE-$((6*7))', 'DONE-42');
    await waitFor(() => session.mirrorBacklogBytes === 0, SHELL_TIMEOUT_MS, 'the mirror to parse everything');

    const second = attach(session);
    await waitFor(() => second.snapshot !== undefined, SHELL_TIMEOUT_MS, 'the second snapshot');
    expect(await second.screenLines()).toEqual(await first.screenLines());
    expect(await second.serialize()).toEqual(await first.serialize());
    expect(second.term.buffer.active.length).toBe(first.term.buffer.active.length);
  });

  it('measures wide characters as the browser does (Unicode 11), so a snapshot puts them where the live stream did', async () => {
    const session = bash();
    const first = attach(session);
    await prompt(first);
    // an emoji that Unicode 6 counts as one column and Unicode 11 as two, then an absolute cursor move
    await run(first, "printf '\\360\\237\\230\\200\\e[3GZ|\\n'; echo WIDE-$((2*3))", 'WIDE-6');
    await waitFor(() => session.mirrorBacklogBytes === 0, SHELL_TIMEOUT_MS, 'the mirror to parse everything');
    expect((await first.screenLines()).some((line) => line.startsWith('\u{1F600}Z|'))).toBe(true);

    const second = attach(session);
    await waitFor(() => second.snapshot !== undefined, SHELL_TIMEOUT_MS, 'the second snapshot');
    expect(await second.screenLines()).toEqual(await first.screenLines());
  });

  it('brings a full-screen vim back on the alternate screen after reattach', async () => {
    const session = bash();
    const file = join(home, 'notes.txt');
    writeFileSync(file, 'first line of notes\nsecond line\n');
    const first = attach(session);
    await prompt(first);
    first.attachment!.input(`vim -u NONE -i NONE -N -n ${file}\r`);
    await waitFor(() => first.term.buffer.active.type === 'alternate', SHELL_TIMEOUT_MS, 'vim to switch to the alternate screen');
    await waitFor(() => first.text.includes('second line'), SHELL_TIMEOUT_MS, 'vim to draw the file');
    first.attachment!.detach();

    const second = attach(session);
    await waitFor(() => second.snapshot !== undefined, SHELL_TIMEOUT_MS, 'the snapshot of vim');
    const screen = await second.screenLines();
    expect(second.term.buffer.active.type).toBe('alternate');
    expect(screen[0]).toBe('first line of notes');
    expect(screen[1]).toBe('second line');
    expect(screen).toEqual(await session.screenLines());

    second.attachment!.input('\x1b:q!\r');
    await waitFor(() => second.term.buffer.active.type === 'normal', SHELL_TIMEOUT_MS, 'vim to leave the alternate screen');
  });

  it('sends the same output to two attached clients, and output after the snapshot exactly once', async () => {
    const session = bash();
    const a = attach(session);
    await prompt(a);
    const b = attach(session);
    await waitFor(() => b.snapshot !== undefined, SHELL_TIMEOUT_MS, 'b attached');
    await run(a, 'seq 1 2000 | tail -n 3; echo PAIR-$((2*21))', 'PAIR-42');
    await waitFor(() => b.text.includes('PAIR-42'), SHELL_TIMEOUT_MS, 'b to see the output');
    expect(await b.screenLines()).toEqual(await a.screenLines());
    expect(b.text.split('PAIR-42').length).toBe(2);
  });

  it('resizes the pty to the most recently active client and clamps absurd sizes', async () => {
    const session = bash();
    const a = attach(session, 100, 30);
    await prompt(a);
    const b = attach(session, 0, 0);
    await waitFor(() => b.snapshot !== undefined, SHELL_TIMEOUT_MS, 'b attached');
    expect(session.info()).toMatchObject({ cols: 2, rows: 1 });
    a.attachment!.resize(100_000, 100_000);
    expect(session.info()).toMatchObject({ cols: 1000, rows: 500 });
    a.attachment!.resize(120, 40);
    b.attachment!.input('stty size; echo SZ-$((1+1))\r');
    await waitFor(() => b.text.includes('SZ-2'), SHELL_TIMEOUT_MS, 'stty size from b');
    expect(session.info()).toMatchObject({ cols: 2, rows: 1 });
    a.attachment!.input('stty size; echo SZ-$((2+2))\r');
    await waitFor(() => a.text.includes('SZ-4'), SHELL_TIMEOUT_MS, 'stty size from a');
    expect(a.text).toContain('40 120');
  });

  it('tells every client the exit status when the shell exits', async () => {
    const session = bash();
    const a = attach(session);
    await prompt(a);
    const b = attach(session);
    a.attachment!.input('exit 7\r');
    await waitFor(() => a.exitStatus !== undefined && b.exitStatus !== undefined, SHELL_TIMEOUT_MS, 'exit at both clients');
    expect(a.exitStatus).toEqual({ code: 7 });
    expect(session.exited).toBe(true);
  });

  it('pauses the pty for a slow client during a flood, keeps memory bounded, loses no byte and answers Ctrl-C', async () => {
    const big = join(home, 'big.b64');
    writeFileSync(big, randomBytes(12 * 1024 * 1024).toString('base64').replace(/.{76}/g, '$&\n'));
    const session = bash({ flow: { highWatermark: 256 * 1024, lowWatermark: 64 * 1024 } });
    const client = attach(session);
    await prompt(client);
    const before = process.memoryUsage().rss;
    client.acking = false;
    // one cat of six copies, not a `while` loop of cats: bash keeps looping when a ^C lands after a
    // cat wrote its last byte but before bash reaped it (it takes the SIGINT as handled by the child)
    client.attachment!.input(`cat ${Array(6).fill(big).join(' ')}\r`);
    await waitFor(() => session.paused, FLOOD_TIMEOUT_MS, 'the pty to pause for a client that is behind');
    await quiet(session);
    // paused: nothing more is read, and what is outstanding is the high watermark plus at most one read
    expect(client.received).toBeLessThanOrEqual(256 * 1024 + 64 * 1024);

    client.ackDelayMs = 20;
    client.resumeAcking();
    await waitFor(() => client.received > 40 * 1024 * 1024, FLOOD_TIMEOUT_MS, '40 MB of flood output');
    expect(session.pauseCount).toBeGreaterThan(0);
    expect(client.maxUnacked).toBeLessThanOrEqual(256 * 1024 + 64 * 1024);
    expect(session.mirrorBacklogBytes).toBeLessThanOrEqual(256 * 1024 + 64 * 1024);
    expect(process.memoryUsage().rss - before).toBeLessThan(200 * 1024 * 1024);

    const started = performance.now();
    client.attachment!.input('\x03');
    client.attachment!.input('echo CC-$((2+3))-X\r');
    await waitFor(() => client.text.includes('CC-5-X'), CTRL_C_TIMEOUT_MS, 'the prompt after Ctrl-C');
    console.log(`ctrl-c to marker: ${(performance.now() - started).toFixed(1)} ms, pauses ${session.pauseCount}`);
    await waitFor(() => client.parsed === session.outputBytes, SHELL_TIMEOUT_MS, 'the client to parse everything');
    expect(client.received).toBe(session.outputBytes);
  });

  it('sends a burst that the pty hands over in several reads as one message, and a keystroke echo alone', async () => {
    const session = bash();
    const client = attach(session);
    const sizes: number[] = [];
    const output = client.output.bind(client);
    client.output = (data) => {
      sizes.push(data.byteLength);
      output(data);
    };
    await prompt(client);
    // 200,000 bytes in one write: the pty hands them over in reads of at most 4 KB, and on a busy
    // machine some reads come more than the batch delay apart, so a few are plenty
    await run(client, "head -c 200000 /dev/zero | tr '\\0' x | dd bs=200000 iflag=fullblock status=none; echo; echo BURST-$((4*4))", 'BURST-16');
    // the next prompt is a write of its own: wait for it, or it could arrive with the echo below
    await waitFor(() => client.text.slice(client.text.lastIndexOf('BURST-16\r\n')).includes('$ ') && client.parsed === session.outputBytes, SHELL_TIMEOUT_MS, 'the prompt after the burst');
    expect(client.received).toBe(session.outputBytes);
    expect(client.text).toContain('x'.repeat(200_000));
    expect(Math.max(...sizes)).toBeGreaterThan(4096);
    // an echoed keystroke is not held back for company
    const before = sizes.length;
    client.attachment!.input('z');
    await waitFor(() => client.text.endsWith('z'), SHELL_TIMEOUT_MS, 'the echo of z');
    expect(sizes.slice(before)).toEqual([1]);
  });

  it('hibernates an idle mirror and restores the same screen, vim included, from it', async () => {
    const timers = new ManualTimers();
    const session = bash({ timers });
    const first = attach(session);
    await prompt(first);
    await run(first, 'seq 1 1500; echo SEQ-$((5*5))', 'SEQ-25');
    first.attachment!.input(`vim -u NONE -i NONE -N -n ${join(home, 'h.txt')}\r`);
    await waitFor(() => first.text.includes('h.txt" [New'), SHELL_TIMEOUT_MS, 'vim to draw its status line');
    await quiet(session);
    const before = await first.serialize();
    first.attachment!.detach();

    timers.advance(120_000);
    await waitFor(() => session.hibernating, SHELL_TIMEOUT_MS, 'the mirror to hibernate');
    const second = attach(session);
    await waitFor(() => second.snapshot !== undefined, SHELL_TIMEOUT_MS, 'the snapshot from hibernation');
    expect(await second.serialize()).toBe(before);
    second.attachment!.input('ityped after hibernation\x1b');
    await waitFor(() => second.text.includes('typed after hibernation'), SHELL_TIMEOUT_MS, 'vim to echo the insert');
    expect(session.hibernating).toBe(false);
    expect(await session.screenLines()).toEqual(await second.screenLines());
    second.attachment!.input(':q!\r');
  });
});
