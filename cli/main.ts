import { ExitCode, UsageError } from './errors.ts';
import { parseExecArgs } from './exec-args.ts';
import { collectRelayedGarbageYoung } from '../protocol/heap.ts';

/**
 * The `den` CLI. bin/den.js calls this with argv (without `node den`) and exits with the result.
 * Start-up time matters (`den exec ws -- true` should take well under 150 ms), so this file and
 * ./program.ts import only commander (and `den exec` skips even that, see ./exec-args.ts);
 * every command loads its module, the client and zod on use.
 *
 * Exit codes: 0 success, 1 the server or the operation failed (its sentence is on stderr),
 * 2 the command line was wrong, 130 interrupted; `den exec` passes on the command's exit code.
 */
export async function runCli(argv: string[]): Promise<number> {
  collectRelayedGarbageYoung(); // `den ssh --stdio` and `den port-forward` relay bulk bytes
  try {
    const exec = argv[0] === 'exec' ? parseExecArgs(argv.slice(1)) : undefined;
    if (exec) {
      const { exec: runExec } = await import('./commands/exec.ts');
      await runExec(exec.workspace, exec.command, exec.options);
      return 0;
    }
    const { buildProgram } = await import('./program.ts');
    await buildProgram().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (error) {
    return reportError(error);
  }
}

/** Prints an error the way every den client does (the sentence, then validations) and picks the exit code. */
export function reportError(error: unknown): number {
  if (isCommanderError(error)) {
    // commander printed its message already (help, version, missing argument, unknown option);
    // help asked for is success, the rest are usage errors.
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.exitCode === 0) return 0;
    return 2;
  }
  if (error instanceof ExitCode) return error.exitCode;
  if (error instanceof UsageError) {
    process.stderr.write(`den: ${error.message}\n`);
    return error.exitCode;
  }
  // By name rather than instanceof DenApiError, so this file does not load the client.
  const apiError = error as { name?: string; message: string; validations?: { field: string; detail: string; line?: number }[] };
  if (apiError?.name === 'DenApiError') {
    process.stderr.write(`den: ${apiError.message}\n`);
    for (const issue of apiError.validations ?? []) {
      const field = issue.field ? `${issue.field}: ` : '';
      process.stderr.write(`  ${field}${issue.detail}${issue.line ? ` (line ${issue.line})` : ''}\n`);
    }
    return 1;
  }
  if (error instanceof Error && error.name === 'AbortError') return 130;
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`den: Something went wrong in the CLI: ${message}. Run again with DEN_DEBUG=1 for details and report it.\n`);
  if (process.env.DEN_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
  return 1;
}

/** By shape rather than instanceof, so reporting an error does not load commander. */
function isCommanderError(error: unknown): error is { code: string; exitCode: number } {
  const code = (error as { code?: unknown } | undefined)?.code;
  return error instanceof Error && typeof code === 'string' && code.startsWith('commander.');
}
