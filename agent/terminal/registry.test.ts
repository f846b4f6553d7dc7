import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { AppError } from '../../protocol/errors.ts';
import { TerminalSessions } from './registry.ts';
import { ManualTimers, ParsingClient, waitFor } from './testing.ts';

const SHELL_TIMEOUT_MS = 10_000;
const HOUR = 60 * 60 * 1000;

const home = mkdtempSync(join(tmpdir(), 'den-term-reg-'));
const registries: TerminalSessions[] = [];
afterEach(() => {
  for (const registry of registries.splice(0)) registry.closeAll();
});
// retries: a hung-up shell may still write its history while the directory is removed
afterAll(() => rmSync(home, { recursive: true, force: true, maxRetries: 5 }));

function registry(timers = new ManualTimers(), flow?: { highWatermark: number; lowWatermark: number; stallTimeoutMs: number }): TerminalSessions {
  const sessions = new TerminalSessions({
    timers,
    defaults: { command: ['bash', '--norc', '--noprofile'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, PS1: '$ ' }, flow },
  });
  registries.push(sessions);
  return sessions;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('TerminalSessions', () => {
  it('lists, finds and closes sessions by id', async () => {
    const timers = new ManualTimers();
    const sessions = registry(timers);
    const a = sessions.create();
    const b = sessions.create({ id: 'mine' });
    expect(sessions.list().map((info) => info.id).sort()).toEqual([a.id, 'mine'].sort());
    expect(sessions.get('mine')).toBe(b);
    expect(sessions.close('mine')).toBe(true);
    timers.advance(10_000);
    await waitFor(() => sessions.get('mine') === undefined, SHELL_TIMEOUT_MS, 'the closed session to leave the list');
    expect(sessions.close('mine')).toBe(false);
    expect(() => sessions.require('mine')).toThrow(AppError);
    expect(() => sessions.create({ id: a.id })).toThrow(/exists already/);
  });

  it('ends the process group of a session that has had no client for the orphan timeout', async () => {
    const timers = new ManualTimers();
    const sessions = registry(timers);
    const session = sessions.create();
    const client = new ParsingClient();
    client.attachment = session.attach(client, { cols: 80, rows: 24 });
    // a background job in the same process group must end with the shell
    client.attachment.input('sleep 1000 & echo BG-$!-PID\r');
    await waitFor(() => /BG-\d+-PID/.test(client.text), SHELL_TIMEOUT_MS, 'the background job pid');
    const background = Number(/BG-(\d+)-PID/.exec(client.text)![1]);

    timers.advance(2 * HOUR);
    expect(session.exited).toBe(false);
    client.attachment.detach();
    timers.advance(HOUR - 1);
    expect(session.exited).toBe(false);
    // reattaching within the hour cancels the expiry
    const again = new ParsingClient();
    again.attachment = session.attach(again, { cols: 80, rows: 24 });
    timers.advance(2 * HOUR);
    expect(session.exited).toBe(false);
    again.attachment.detach();
    timers.advance(HOUR);
    await waitFor(() => session.exited, SHELL_TIMEOUT_MS, 'the orphaned shell to exit');
    expect(sessions.get(session.id)).toBeUndefined();
    // the background job got SIGHUP with its group (or SIGKILL after the grace period)
    timers.advance(10_000);
    await waitFor(() => !processAlive(background), SHELL_TIMEOUT_MS, 'the background job to end');
  });

  it('detaches a client that stops acknowledging, and the session keeps serving the others', async () => {
    const timers = new ManualTimers();
    const sessions = registry(timers, { highWatermark: 64 * 1024, lowWatermark: 16 * 1024, stallTimeoutMs: 30_000 });
    const session = sessions.create();
    const stuck = new ParsingClient();
    stuck.acking = false;
    stuck.attachment = session.attach(stuck, { cols: 80, rows: 24 });
    const healthy = new ParsingClient();
    healthy.attachment = session.attach(healthy, { cols: 80, rows: 24 });
    const file = join(home, 'medium.txt');
    writeFileSync(file, 'x'.repeat(79).concat('\n').repeat(8000));
    healthy.attachment.input(`cat ${file}; echo END-$((3*3))\r`);
    await waitFor(() => session.paused, SHELL_TIMEOUT_MS, 'the pty to pause for the stuck client');
    expect(healthy.text).not.toContain('END-9');
    // the healthy one has acknowledged all it got (a client still parsing has a stall watch too,
    // which its next ack ends; the manual clock jumps the whole 30 s at once)
    await waitFor(() => healthy.parsed === healthy.received && healthy.attachment!.unackedBytes === 0, SHELL_TIMEOUT_MS, 'the healthy client to catch up');

    timers.advance(30_000);
    expect(stuck.detachedReason?.code).toBe('TERMINAL_CLIENT_TOO_SLOW');
    await waitFor(() => healthy.text.includes('END-9'), SHELL_TIMEOUT_MS, 'the healthy client to get the rest');
    expect(stuck.maxUnacked).toBeLessThanOrEqual(64 * 1024 + 64 * 1024);
    expect(session.clientCount).toBe(1);
  });

  it('detaches a client that stops acknowledging between the watermarks while the pty is paused for another reason', async () => {
    const timers = new ManualTimers();
    const sessions = registry(timers, { highWatermark: 64 * 1024, lowWatermark: 16 * 1024, stallTimeoutMs: 30_000 });
    const session = sessions.create();
    const lagging = new ParsingClient();
    lagging.acking = false;
    lagging.attachment = session.attach(lagging, { cols: 80, rows: 24 });
    const slow = new ParsingClient();
    slow.acking = false;
    slow.attachment = session.attach(slow, { cols: 80, rows: 24 });
    const file = join(home, 'medium.txt');
    writeFileSync(file, 'x'.repeat(79).concat('\n').repeat(8000));
    slow.attachment.input(`cat ${file}; echo END-$((3*3))\r`);
    await waitFor(() => session.paused && lagging.parsed === lagging.received, SHELL_TIMEOUT_MS, 'the pty to pause');
    // one client acknowledges down to between the watermarks and then stops; the other catches up
    lagging.attachment.ack(lagging.attachment.unackedBytes - 40 * 1024);
    slow.resumeAcking();
    await waitFor(() => slow.attachment!.unackedBytes === 0, SHELL_TIMEOUT_MS, 'the slow client to catch up');
    expect(session.paused).toBe(true);

    timers.advance(30_000);
    expect(lagging.detachedReason?.code).toBe('TERMINAL_CLIENT_TOO_SLOW');
    await waitFor(() => slow.text.includes('END-9'), SHELL_TIMEOUT_MS, 'the other client to get the rest');
  });

  it('tells a client that attaches to an ended session that it exited', async () => {
    const timers = new ManualTimers();
    const sessions = registry(timers);
    const session = sessions.create();
    session.close();
    // a shell hung up while still starting may miss SIGHUP; the SIGKILL after the grace period does not
    timers.advance(10_000);
    await waitFor(() => session.exited, SHELL_TIMEOUT_MS, 'the shell to exit');
    const late = new ParsingClient();
    late.attachment = session.attach(late, { cols: 80, rows: 24 });
    await waitFor(() => late.exitStatus !== undefined, SHELL_TIMEOUT_MS, 'exit for the late client');
    expect([129, 137]).toContain(late.exitStatus!.code);
  });
});
