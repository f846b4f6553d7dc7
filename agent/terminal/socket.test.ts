import { afterAll, describe, expect, it } from 'vitest';
import { decodeServerMessage, TERMINAL_CLOSE, type ServerMessage } from '../../protocol/terminal.ts';
import { TerminalSessions } from './registry.ts';
import { serveTerminalConnection } from './socket.ts';
import { waitFor } from './testing.ts';

const SHELL_TIMEOUT_MS = 10_000;
const sessions = new TerminalSessions({ defaults: { command: ['bash', '--norc', '--noprofile'], env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/tmp', PS1: '$ ' } } });
afterAll(() => sessions.closeAll());

function connect() {
  const messages: ServerMessage[] = [];
  let closed: { code: number; reason: string } | undefined;
  const connection = serveTerminalConnection(
    {
      send: (message) => messages.push(decodeServerMessage(message)),
      close: (code, reason) => (closed = { code, reason }),
    },
    sessions,
  );
  return { connection, messages, closed: () => closed };
}

describe('serveTerminalConnection', () => {
  it('closes with 4404 and TERMINAL_SESSION_NOT_FOUND for an unknown session id', () => {
    const client = connect();
    client.connection.message(JSON.stringify({ type: 'attach', sessionId: 'gone', cols: 80, rows: 24 }));
    expect(client.messages).toEqual([{ type: 'error', code: 'TERMINAL_SESSION_NOT_FOUND', message: expect.any(String) }]);
    expect(client.closed()?.code).toBe(TERMINAL_CLOSE.sessionNotFound);
  });

  it('closes with 4004 when the first message is not attach, or is binary garbage', () => {
    for (const first of ['{"type":"ack","bytes":5}', new Uint8Array([0xff, 0xfe]), 'x'.repeat(100_000)]) {
      const client = connect();
      client.connection.message(first);
      expect(client.messages[0]).toMatchObject({ type: 'error', code: 'TERMINAL_MESSAGE_INVALID' });
      expect(client.closed()?.code).toBe(TERMINAL_CLOSE.protocolError);
    }
  });

  it('refuses an unknown protocol major with 4002', () => {
    const client = connect();
    client.connection.message(JSON.stringify({ type: 'attach', protocol: { major: 9, minor: 0 }, cols: 80, rows: 24 }));
    expect(client.messages[0]).toMatchObject({ type: 'error', code: 'TERMINAL_PROTOCOL_UNSUPPORTED' });
    expect(client.closed()?.code).toBe(TERMINAL_CLOSE.protocolUnsupported);
  });

  it('keeps the session when garbage arrives after attach, and a second connection can reattach', async () => {
    const first = connect();
    first.connection.message(JSON.stringify({ type: 'attach', cols: 0, rows: 100_000 }));
    await waitFor(() => first.messages.some((m) => m.type === 'attached'), SHELL_TIMEOUT_MS, 'attached');
    const attached = first.messages.find((m) => m.type === 'attached');
    if (attached?.type !== 'attached') throw new Error('unreachable');
    expect([attached.cols, attached.rows]).toEqual([2, 500]);
    first.connection.message('{"type":"resize","cols":"wide"}');
    expect(first.closed()?.code).toBe(TERMINAL_CLOSE.protocolError);

    const second = connect();
    second.connection.message(JSON.stringify({ type: 'attach', sessionId: attached.sessionId, cols: 80, rows: 24 }));
    await waitFor(() => second.messages.some((m) => m.type === 'attached'), SHELL_TIMEOUT_MS, 'reattached');
    second.connection.message(JSON.stringify({ type: 'close' }));
    await waitFor(() => second.closed() !== undefined, SHELL_TIMEOUT_MS, 'the session to end');
    expect(second.messages.at(-1)).toMatchObject({ type: 'exit' });
    expect(second.closed()?.code).toBe(TERMINAL_CLOSE.sessionEnded);
  });
});
