import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * `den server` opens the SSH port itself: the real process (Node's own ESM loader, not vitest's),
 * its flags, and its sentence when the port is taken.
 */
const ROOT = resolve(import.meta.dirname, '..');
const START_TIMEOUT_MS = 30_000;
const dirs: string[] = [];
afterAll(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

describe('den server and its SSH port', () => {
  it('listens for SSH on --ssh-port and answers with its SSH banner', async () => {
    const [httpPort, sshPort] = [await freePort(), await freePort()];
    const server = startServer(['--listen', `127.0.0.1:${httpPort}`, '--ssh-port', String(sshPort)]);
    try {
      const banner = await readBanner(sshPort, server.exited);
      expect(banner).toMatch(/^SSH-2\.0-den\r\n/);
    } finally {
      server.child.kill('SIGTERM');
      await server.exited;
    }
  }, START_TIMEOUT_MS + 5_000);

  it('stops with a sentence when the SSH port it was given is taken', async () => {
    const taken = await listening();
    const port = (taken.address() as AddressInfo).port;
    const server = startServer(['--listen', `127.0.0.1:${await freePort()}`, '--ssh-port', String(port)]);
    const code = await server.exited;
    taken.close();
    expect(code).toBe(1);
    expect(server.stderr()).toContain(`den server: SSH port ${port} on 127.0.0.1 is already in use. Stop the other process or pass --ssh-port with a free port (0 for none).`);
  }, START_TIMEOUT_MS + 5_000);
});

function startServer(args: string[]) {
  const dataDir = mkdtempSync(join(tmpdir(), 'den-ssh-server-'));
  dirs.push(dataDir);
  const child = spawn(process.execPath, [join(ROOT, 'bin', 'den.js'), 'server', '--data-dir', dataDir, '--log-level', 'warn', ...args], {
    env: { ...process.env, DEN_RUNTIME: 'process' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolvePromise) => child.once('exit', (code) => resolvePromise(code)));
  return { child, exited, stderr: () => stderr };
}

/** Connects until the port answers and returns the first line the server sends. */
async function readBanner(port: number, exited: Promise<number | null>): Promise<string> {
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (gone) throw new Error('den server exited before its SSH port answered');
    const banner = await new Promise<string | undefined>((resolvePromise) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('data', (data) => {
        socket.destroy();
        resolvePromise(data.toString('latin1'));
      });
      socket.once('error', () => resolvePromise(undefined));
    });
    if (banner) return banner;
    if (Date.now() > deadline) throw new Error(`the SSH port did not answer within ${START_TIMEOUT_MS} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function listening(): Promise<Server> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return server;
}

async function freePort(): Promise<number> {
  const probe = await listening();
  const { port } = probe.address() as AddressInfo;
  await new Promise((r) => probe.close(r));
  return port;
}
