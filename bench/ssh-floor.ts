// The floors of an SSH path on this machine, for bench/ssh.ts's `--floor`, with nothing of den
// around them (no store, no link, no limits, no multiplexing); not a product: each runs
// `sh -c COMMAND` for the one key it is given, on a pty when the client asked for one (the echo),
// on pipes otherwise (the `cat`: stdout streamed with the stream's own backpressure).
//  - `one`: an ssh2 server that writes the pty itself (node-pty, the agent's PtyWriter), as a
//    gateway in the agent would: one Node process on the keystroke's way;
//  - `two`: the same ssh2 server relaying each session's bytes over a plain TCP connection to a
//    second Node process that owns the pty or the pipes (started here as `pty-server`): den's
//    shape, two Node processes, without den's protocol.
//
// Prints {"port": N, "pids": [...]} (the processes on the keystroke's way) once listening.
//
//   node bench/ssh-floor.ts one|two HOST_KEY_FILE AUTHORIZED_PUBLIC_KEY_FILE
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import type { Writable } from 'node:stream';
import * as pty from 'node-pty';
import ssh2 from 'ssh2';
import { PtyWriter } from '../agent/pty-writer.ts';

const [mode, hostKeyFile, publicKeyFile] = process.argv.slice(2);
process.on('SIGTERM', () => process.exit(0));

interface Size {
  cols: number;
  rows: number;
}

/** Runs `command` on a pty: input from `onInput`'s callers, output to `output`, `onExit` with the status. */
function runOnPty(command: string, size: Size, output: (text: string) => void, onExit: (code: number) => void): { input(bytes: Buffer): void; kill(): void } {
  const terminal = pty.spawn('/bin/sh', ['-c', command], { ...size, env: { ...process.env, TERM: 'xterm-256color' } as Record<string, string> });
  const writer = new PtyWriter(terminal);
  terminal.onData(output);
  terminal.onExit(({ exitCode }) => {
    writer.close();
    onExit(exitCode);
  });
  return { input: (bytes) => writer.write(bytes), kill: () => terminal.kill('SIGKILL') };
}

/** Runs `command` on pipes: stdout into `output` (piped, so its backpressure holds the command), `onExit` with the status once stdout ended. */
function runOnPipes(command: string, output: Writable, onExit: (code: number) => void): { input(bytes: Buffer): void; kill(): void } {
  const child = spawn('/bin/sh', ['-c', command], { stdio: ['pipe', 'pipe', 'inherit'] });
  child.stdin.on('error', () => {});
  child.stdout.pipe(output, { end: false });
  child.once('close', (code) => onExit(code ?? 255));
  return { input: (bytes) => child.stdin.write(bytes), kill: () => child.kill('SIGKILL') };
}

if (mode === 'pty-server') {
  process.stdin.on('end', () => process.exit(0)).resume();
  // one connection per session: a first line of JSON {command, cols, rows} (no cols: pipes, not a pty), then raw bytes both ways
  const server = createServer((socket) => {
    socket.setNoDelay(true);
    let head = '';
    let session: ReturnType<typeof runOnPty> | undefined;
    socket.on('data', (chunk: Buffer) => {
      if (session) return session.input(chunk);
      head += chunk.toString('latin1');
      const newline = head.indexOf('\n');
      if (newline < 0) return;
      const { command, cols, rows } = JSON.parse(head.slice(0, newline)) as { command: string } & Partial<Size>;
      session = cols && rows ? runOnPty(command, { cols, rows }, (text) => socket.write(text), () => socket.end()) : runOnPipes(command, socket, () => socket.end());
      const rest = Buffer.from(head.slice(newline + 1), 'latin1');
      if (rest.byteLength > 0) session.input(rest);
    });
    socket.on('close', () => session?.kill());
    socket.on('error', () => {});
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port, pid: process.pid })}\n`));
} else if (mode === 'one' || mode === 'two') {
  const ptyServer = mode === 'two' ? await startPtyServer() : undefined;
  const ptyServerPort = ptyServer?.port;
  const allowed = ssh2.utils.parseKey(readFileSync(publicKeyFile));
  if (allowed instanceof Error) throw allowed;
  const allowedKey = allowed.getPublicSSH();
  const server = new ssh2.Server({ hostKeys: [readFileSync(hostKeyFile)] }, (client) => {
    (client as unknown as { setNoDelay(on: boolean): void }).setNoDelay(true);
    client.on('authentication', (ctx) => {
      if (ctx.method !== 'publickey' || !ctx.key.data.equals(allowedKey)) return ctx.reject(['publickey']);
      if (!ctx.signature) return ctx.accept();
      if (allowed.verify(ctx.blob!, ctx.signature, ctx.hashAlgo) !== true) return ctx.reject(['publickey']);
      ctx.accept();
    });
    client.on('error', () => {});
    client.on('ready', () => {
      client.on('session', (accept) => {
        const session = accept();
        let size: Size | undefined;
        session.on('pty', (acceptPty, _reject, info) => {
          size = { cols: info.cols || 80, rows: info.rows || 24 };
          acceptPty?.();
        });
        session.on('exec', (acceptExec, _reject, info) => {
          const channel = acceptExec();
          const finish = (code: number) => {
            channel.exit(code);
            channel.end();
          };
          if (ptyServerPort === undefined) {
            const running = size ? runOnPty(info.command, size, (text) => channel.write(text), finish) : runOnPipes(info.command, channel, finish);
            channel.on('data', (chunk: Buffer) => running.input(chunk));
            channel.on('close', () => running.kill());
            return;
          }
          const relay: Socket = connect(ptyServerPort, '127.0.0.1');
          relay.setNoDelay(true);
          relay.write(`${JSON.stringify({ command: info.command, ...size })}\n`);
          channel.on('data', (chunk: Buffer) => relay.write(chunk));
          // piped, so the client's window holds the relay (and the echo's writes are as before)
          relay.pipe(channel, { end: false });
          relay.on('end', () => finish(0));
          relay.on('error', () => finish(255));
          channel.on('close', () => relay.destroy());
        });
      });
    });
  });
  // the pids of the processes on the path, so the bench can read their CPU
  const pids = [process.pid, ...(ptyServer ? [ptyServer.pid] : [])];
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port, pids })}\n`));
} else {
  process.stderr.write('usage: node bench/ssh-floor.ts one|two HOST_KEY_FILE AUTHORIZED_PUBLIC_KEY_FILE\n');
  process.exit(2);
}

/** The pty-server process: killed when this one exits, and ends itself when its stdin closes (this one was killed). */
async function startPtyServer(): Promise<{ port: number; pid: number }> {
  const child = spawn(process.execPath, [import.meta.filename, 'pty-server'], { stdio: ['pipe', 'pipe', 'inherit'] });
  process.on('exit', () => child.kill('SIGKILL'));
  const line = await new Promise<string>((resolve) => child.stdout.setEncoding('utf8').once('data', resolve));
  return JSON.parse(line) as { port: number; pid: number };
}
