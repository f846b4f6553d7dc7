// The `cat` client of bench/ssh.ts, in its own process so that the process under test (den's
// server, in the bench's process) spends its CPU on den alone: it runs `ssh ARGS COMMAND`, counts
// what comes out from the first byte to the last and prints one JSON line:
// {"bytes": N, "ms": first byte to last, "code": ssh's exit status}.
//
//   node bench/ssh-cat.ts ssh-arg... COMMAND
import { spawn } from 'node:child_process';

const sshArgs = process.argv.slice(2);
if (sshArgs.length < 2) {
  process.stderr.write('usage: node bench/ssh-cat.ts ssh-arg... COMMAND\n');
  process.exit(2);
}
const child = spawn('ssh', sshArgs, { stdio: ['ignore', 'pipe', 'inherit'] });
let bytes = 0;
let first = 0;
child.stdout.on('data', (chunk: Buffer) => {
  if (bytes === 0) first = performance.now();
  bytes += chunk.length;
});
child.on('close', (code) => process.stdout.write(`${JSON.stringify({ bytes, ms: performance.now() - first, code })}\n`));
