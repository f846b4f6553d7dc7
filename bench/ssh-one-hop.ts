// The floor of an SSH gateway with one Node process on the keystroke's way, for bench/ssh.ts's
// `--floor`: an ssh2 server that writes the pty itself (node-pty, the agent's PtyWriter), as a
// gateway in the agent would, with nothing of den around it (no store, no link, no limits). Not a
// product: it runs `sh -c COMMAND` for the one key it is given. Prints {"port": N} once listening.
//
//   node bench/ssh-one-hop.ts HOST_KEY_FILE AUTHORIZED_PUBLIC_KEY_FILE
import { readFileSync } from 'node:fs';
import * as pty from 'node-pty';
import ssh2 from 'ssh2';
import { PtyWriter } from '../agent/pty-writer.ts';

const [hostKeyFile, publicKeyFile] = process.argv.slice(2);
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
      let size = { cols: 80, rows: 24 };
      session.on('pty', (acceptPty, _reject, info) => {
        size = { cols: info.cols || 80, rows: info.rows || 24 };
        acceptPty?.();
      });
      session.on('exec', (acceptExec, _reject, info) => {
        const channel = acceptExec();
        const terminal = pty.spawn('/bin/sh', ['-c', info.command], { ...size, env: { ...process.env, TERM: 'xterm-256color' } as Record<string, string> });
        const input = new PtyWriter(terminal);
        channel.on('data', (chunk: Buffer) => input.write(chunk));
        terminal.onData((text) => channel.write(text));
        terminal.onExit(({ exitCode }) => {
          input.close();
          channel.exit(exitCode);
          channel.end();
        });
        channel.on('close', () => terminal.kill('SIGKILL'));
      });
    });
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`));
process.on('SIGTERM', () => process.exit(0));
