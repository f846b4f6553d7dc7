import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, test } from 'vitest';
import { WebSocketServer } from 'ws';
import { TERMINAL_CLOSE, decodeClientMessage } from '../protocol/terminal.ts';
import { DenApiError } from './errors.ts';
import { nodeSocket } from './node-socket.ts';
import type { SocketConnector } from './socket.ts';
import { openTerminal } from './terminal.ts';

/**
 * The terminal client over both sockets it is given (client/socket.ts): the platform WebSocket
 * (what browsers use; Node 24's undici here) and `ws` (the CLI). Against loopback servers that
 * refuse the way den's does; the attached path runs against the real server in
 * test/service-agents.test.ts (default socket) and test/cli-terminal.test.ts (`ws`).
 */
const SENTENCE = "Workspace 'ada/pair' is stopped. Start it with `den start` and open the terminal again.";
let server: Server | undefined;

afterEach(async () => {
  await new Promise((resolve) => server?.close(resolve));
  server = undefined;
});

async function listen(setup: (server: Server) => void): Promise<string> {
  server = createServer((_request, response) => response.writeHead(404).end());
  setup(server);
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Refuses every upgrade with den's error envelope, as the server does for a stopped workspace. */
function refuseUpgrades(target: Server): void {
  target.on('upgrade', (_request, socket) => {
    const body = JSON.stringify({ error: { code: 'WORKSPACE_NOT_RUNNING', message: SENTENCE } });
    socket.end(`HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
  });
}

const open = (baseUrl: string, connect?: SocketConnector) => openTerminal({
  baseUrl, token: 'den_test', owner: 'ada', workspace: 'pair', cols: 80, rows: 24, connect, onOutput: (_data, consumed) => consumed(),
});

describe('openTerminal', () => {
  test('with ws, a refused upgrade rejects with the server\'s code and sentence', async () => {
    const url = await listen(refuseUpgrades);
    const error = await open(url, nodeSocket).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DenApiError);
    expect(error).toMatchObject({ code: 'WORKSPACE_NOT_RUNNING', status: 409, message: SENTENCE });
  });

  test('with the platform WebSocket, which cannot read a refusal, it says so with SOCKET_REFUSED', async () => {
    const url = await listen(refuseUpgrades);
    const error = await open(url).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DenApiError);
    expect(error).toMatchObject({ code: 'SOCKET_REFUSED', status: 0 });
    expect((error as DenApiError).message).toMatch(/^The den server at http:\/\/127\.0\.0\.1:\d+ did not open the terminal \(code 1006\): /);
  });

  test.each([['ws', nodeSocket], ['the platform WebSocket', undefined]] as const)(
    'with %s, an error before attach rejects with its sentence and the close code that followed',
    async (_name, connect) => {
      const sockets = new WebSocketServer({ noServer: true });
      const url = await listen((target) => target.on('upgrade', (request, socket, head) => {
        // the bearer token reaches the server on both sockets (undici takes a header too)
        expect(request.headers.authorization).toBe('Bearer den_test');
        sockets.handleUpgrade(request, socket, head, (ws) => ws.once('message', (data, isBinary) => {
          expect(decodeClientMessage(isBinary ? new Uint8Array(data as Buffer) : String(data))).toMatchObject({ type: 'attach', cols: 80, rows: 24 });
          ws.send(JSON.stringify({ type: 'error', code: 'WORKSPACE_NOT_RUNNING', message: SENTENCE }));
          ws.close(TERMINAL_CLOSE.workspaceNotRunning);
        }));
      }));
      const error = await open(url, connect).catch((caught: unknown) => caught);
      sockets.close();
      expect(error).toMatchObject({ code: 'WORKSPACE_NOT_RUNNING', status: 409, message: SENTENCE, closeCode: TERMINAL_CLOSE.workspaceNotRunning });
    },
  );
});
