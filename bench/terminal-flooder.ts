/**
 * The flooding session of the fairness measurement, in a process of its own: it runs
 * `while :; do cat FILE; done` and parses and acknowledges the output like a browser tab. In the
 * measuring process its parser's slices (xterm.js parses up to 12 ms at a time) would hold up the
 * other sessions' echoes in the benchmark itself, which no other user's browser would see.
 *
 *   node bench/terminal-flooder.ts '{"url": ..., "file": ..., "connect": {...}}'
 * prints FLOODING once the flood runs; on `stop` (a line on stdin) it presses Ctrl-C, waits for
 * the prompt, closes the session, prints STOPPED with what it received and exits.
 */
import { createInterface } from 'node:readline';
import { openShell, PROMPT, type ConnectOptions } from './terminal-client.ts';

const { url, file, connect } = JSON.parse(process.argv[2]) as { url: string; file: string; connect: ConnectOptions };
const flooder = await openShell(url, connect);
flooder.type(`while :; do cat ${file}; done\r`);
// running once more than a screenful of the file has come back
while (flooder.received < 64 * 1024) await new Promise((resolve) => setTimeout(resolve, 20));
process.stdout.write('FLOODING\n');
for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() !== 'stop') continue;
  const prompt = flooder.when(PROMPT, 'parsed', 30_000);
  flooder.type('\x03');
  await prompt;
  flooder.send({ type: 'close' });
  await flooder.close();
  process.stdout.write(`STOPPED ${JSON.stringify({ received: flooder.received, discarded: flooder.discarded })}\n`);
  process.exit(0);
}
