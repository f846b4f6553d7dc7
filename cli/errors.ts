/**
 * A mistake in how the CLI was called (missing argument, malformed --param, no login yet in a
 * form the user must fix locally). Exit code 2, like commander's own usage errors.
 */
export class UsageError extends Error {
  readonly exitCode: number;

  constructor(message: string, exitCode = 2) {
    super(message);
    this.name = 'UsageError';
    this.exitCode = exitCode;
  }
}

/** A failure the command already explained on stderr (a failed build, a non-zero exec); only the exit code is left. */
export class ExitCode extends Error {
  readonly exitCode: number;

  constructor(exitCode: number) {
    super(`exit ${exitCode}`);
    this.name = 'ExitCode';
    this.exitCode = exitCode;
  }
}
