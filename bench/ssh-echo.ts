// The keystroke-echo client of bench/ssh.ts, in its own process so that the process under test
// (den's server, in the bench's process) spends its CPU on den alone: it runs
// `ssh ARGS -tt 'stty raw -echo; cat'`, writes one byte at a time into it and times the byte's
// echo from the remote pty. Prints one JSON line: {"samples": [ms, ...]}.
//
//   node bench/ssh-echo.ts COUNT ssh-arg...
import { spawn } from 'node:child_process';

const [countText, ...sshArgs] = process.argv.slice(2);
const count = Number(countText);
if (!Number.isInteger(count) || count < 1 || sshArgs.length === 0) {
  process.stderr.write('usage: node bench/ssh-echo.ts COUNT ssh-arg...\n');
  process.exit(2);
}

const child = spawn('ssh', [...sshArgs, '-tt', 'stty raw -echo; cat'], { stdio: ['pipe', 'pipe', 'ignore'] });
let waiting: ((text: string) => void) | undefined;
child.stdout.setEncoding('utf8').on('data', (text: string) => waiting?.(text));
child.on('exit', (code) => {
  if (waiting) {
    process.stderr.write(`ssh exited (${code}) before the echo came back\n`);
    process.exit(1);
  }
});

/** Milliseconds from writing `byte` to reading it back. */
const roundTrip = (byte: string) =>
  new Promise<number>((resolve) => {
    const started = performance.now();
    let seen = '';
    waiting = (text) => {
      seen += text;
      if (seen.includes(byte)) {
        waiting = undefined;
        resolve(performance.now() - started);
      }
    };
    child.stdin.write(byte);
  });

// the remote `stty raw -echo` then `cat` echoes exactly what it reads: wait until a probe comes back
const deadline = Date.now() + 20_000;
for (;;) {
  const ready = await Promise.race([roundTrip('r'), new Promise<number>((r) => setTimeout(() => r(-1), 500))]);
  if (ready >= 0) break;
  if (Date.now() > deadline) {
    process.stderr.write('the pty never echoed\n');
    process.exit(1);
  }
}
const samples: number[] = [];
for (let i = 0; i < count; i++) samples.push(await roundTrip(String.fromCharCode(97 + (i % 26))));
child.kill('SIGTERM');
process.stdout.write(`${JSON.stringify({ samples })}\n`);
