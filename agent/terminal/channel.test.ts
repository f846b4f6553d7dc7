import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { AgentFrame } from '../../protocol/agent.ts';
import { decodeServerMessage, encodeClientMessage, encodeRecord, RecordReader, type ServerMessage } from '../../protocol/terminal.ts';
import { terminalChannelOpener } from './channel.ts';
import { TerminalSessions } from './registry.ts';
import { waitFor } from './testing.ts';

const SHELL_TIMEOUT_MS = 10_000;
const home = mkdtempSync(join(tmpdir(), 'den-term-chan-'));
const sessions = new TerminalSessions({ defaults: { command: ['bash', '--norc', '--noprofile'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, PS1: '$ ' } } });
afterAll(() => {
  sessions.closeAll();
  rmSync(home, { recursive: true, force: true, maxRetries: 5 }); // retries: a hung-up shell may still write its history
});

/** The server's end of one terminal channel, as the link would deliver it. */
function openChannel(channel: number, sessionId?: string, peerWindow = 256 * 1024) {
  const frames: AgentFrame[] = [];
  const messages: ServerMessage[] = [];
  const reader = new RecordReader(16 * 1024 * 1024);
  let text = '';
  let closed = false;
  const context = {
    send(frame: AgentFrame) {
      frames.push(frame);
      if (frame.type !== 'data') return;
      for (const record of reader.push(frame.payload)) {
        const message = decodeServerMessage(record);
        messages.push(message);
        if (message.type === 'output') text += new TextDecoder().decode(message.data);
      }
    },
    baseEnv: () => ({}),
    home: () => home,
  };
  const handler = terminalChannelOpener(sessions)(channel, { kind: 'terminal', sessionId, cols: 80, rows: 24 }, peerWindow, context, () => (closed = true));
  const send = (message: Parameters<typeof encodeClientMessage>[0]) => handler.onData(encodeRecord(encodeClientMessage(message)));
  return { handler, frames, messages, send, text: () => text, closed: () => closed };
}

describe('terminal channel', () => {
  it('attaches through the channel, echoes input, and survives the channel going away', async () => {
    const first = openChannel(1);
    expect(first.frames[0]).toEqual({ type: 'open_ok', channel: 1, window: 256 * 1024 });
    await waitFor(() => first.messages.some((m) => m.type === 'attached'), SHELL_TIMEOUT_MS, 'attached over the channel');
    const attached = first.messages.find((m) => m.type === 'attached')!;
    if (attached.type !== 'attached') throw new Error('unreachable');
    first.send({ type: 'input', data: 'echo CH-$((40+2))\r' });
    await waitFor(() => first.text().includes('CH-42'), SHELL_TIMEOUT_MS, 'the echo over the channel');

    first.handler.abort();
    const second = openChannel(3, attached.sessionId);
    await waitFor(() => second.messages.some((m) => m.type === 'attached'), SHELL_TIMEOUT_MS, 'reattached over a new channel');
    const again = second.messages.find((m) => m.type === 'attached');
    expect(again?.type === 'attached' && again.snapshot).toContain('CH-42');
    second.send({ type: 'close' });
    await waitFor(() => second.closed(), SHELL_TIMEOUT_MS, 'the channel to close after the shell ended');
    expect(second.messages.at(-1)).toMatchObject({ type: 'exit' });
    expect(second.frames.at(-1)).toEqual({ type: 'close', channel: 3 });
  });

  it('hangs up the shell when the agent shuts down (SIGTERM to its channels), so the stop does not wait', async () => {
    const channel = openChannel(11);
    await waitFor(() => channel.messages.some((m) => m.type === 'attached'), SHELL_TIMEOUT_MS, 'attached');
    channel.handler.onSignal('SIGTERM');
    await waitFor(() => channel.closed(), SHELL_TIMEOUT_MS, 'the channel to close after the hang-up');
    expect(channel.messages.at(-1)).toMatchObject({ type: 'exit' });
    expect(channel.frames.at(-1)).toEqual({ type: 'close', channel: 11 });
  });

  it('answers open_error TERMINAL_SESSION_NOT_FOUND for an unknown session id', () => {
    const channel = openChannel(5, 'no-such-session');
    expect(channel.frames).toEqual([{ type: 'open_error', channel: 5, code: 'TERMINAL_SESSION_NOT_FOUND', message: expect.any(String) }]);
    expect(channel.closed()).toBe(true);
  });

  it('closes the channel with TERMINAL_MESSAGE_INVALID on garbage input, and the session lives on', async () => {
    const channel = openChannel(7);
    await waitFor(() => channel.messages.some((m) => m.type === 'attached'), SHELL_TIMEOUT_MS, 'attached');
    channel.handler.onData(encodeRecord(new Uint8Array([0x42, 1, 2, 3])));
    expect(channel.closed()).toBe(true);
    expect(channel.frames.at(-1)).toMatchObject({ type: 'close', channel: 7, error: { code: 'TERMINAL_MESSAGE_INVALID' } });
    expect(sessions.list().length).toBeGreaterThan(0);
  });

  it('sends output only within the credit the server granted', async () => {
    const channel = openChannel(9, undefined, 4096);
    await waitFor(() => channel.messages.some((m) => m.type === 'attached'), SHELL_TIMEOUT_MS, 'attached');
    channel.send({ type: 'input', data: 'seq 1 20000\r' });
    await waitFor(() => channel.frames.filter((f) => f.type === 'data').reduce((n, f) => n + (f.type === 'data' ? f.payload.byteLength : 0), 0) >= 4096, SHELL_TIMEOUT_MS, 'the credit to be used up');
    const sent = () => channel.frames.reduce((n, f) => n + (f.type === 'data' ? f.payload.byteLength : 0), 0);
    expect(sent()).toBe(4096);
    channel.handler.onWindow(8192);
    await waitFor(() => sent() === 4096 + 8192, SHELL_TIMEOUT_MS, 'the granted credit to be used');
    expect(sent()).toBe(4096 + 8192);
  });
});
