import { fetchUsername, openExec } from '../../client/exec.ts';
import { requireLogin } from '../config.ts';
import { ExitCode, UsageError } from '../errors.ts';
import { parseWorkspaceRef } from '../refs.ts';
import { parseParams } from '../params.ts';

/**
 * `den exec WS -- CMD...`: the command's stdout/stderr here, our stdin there, its exit code ours.
 * This is the latency-critical command (`den exec ws -- true` <= 150 ms end to end), so it
 * imports only the exec websocket client (no DenClient, no zod), and makes no /users/me round
 * trip when the saved login already knows the username.
 */
export async function exec(
  reference: string,
  command: string[],
  options: { tty?: boolean; workdir?: string; service?: string; env: string[] },
): Promise<void> {
  // commander keeps the `--` that separates den's options from the command
  if (command[0] === '--') command = command.slice(1);
  if (command.length === 0) throw new UsageError('Give the command to run after --, for example `den exec demo -- ls -la`.');
  const env = options.env.length > 0 ? parseParams(options.env, '--env') : undefined;
  const config = requireLogin();
  const parsed = parseWorkspaceRef(reference);
  const owner = parsed.owner ?? config.username ?? (await fetchUsername(config.url, config.token));

  const tty = options.tty ?? (process.stdin.isTTY && process.stdout.isTTY);
  const controller = new AbortController();
  // With a terminal, Ctrl-C is a byte for the remote program; without one, it ends the remote command.
  const onInterrupt = () => controller.abort();
  if (tty && process.stdin.isTTY) process.stdin.setRawMode(true);
  else process.once('SIGINT', onInterrupt);
  let code: number;
  try {
    code = await openExec({
      baseUrl: config.url,
      token: config.token,
      owner,
      workspace: parsed.name,
      service: options.service,
      command,
      env,
      cwd: options.workdir,
      tty: tty ? { cols: process.stdout.columns || 80, rows: process.stdout.rows || 24 } : undefined,
      stdin: process.stdin,
      stdout: process.stdout,
      stderr: process.stderr,
      signal: controller.signal,
    });
  } catch (error) {
    if (controller.signal.aborted) throw new ExitCode(130);
    throw error;
  } finally {
    if (tty && process.stdin.isTTY) process.stdin.setRawMode(false);
    process.off('SIGINT', onInterrupt);
    // stdin may still be open (a terminal); it must not keep den alive after the command ended.
    process.stdin.destroy();
  }
  if (code !== 0) throw new ExitCode(code);
}
