/**
 * A fast path for `den exec`: parses its well-formed command lines without commander, whose
 * import is about 15-20 ms of the ~150 ms budget of `den exec ws -- true`. Anything it does not
 * recognise (help, an unknown or malformed option, a missing command) returns undefined and
 * goes through commander as usual, so commander stays the one source of help and usage errors.
 * It mirrors the options declared for `exec` in ./program.ts; a test runs both on the same lines.
 */
export interface ExecArgs {
  workspace: string;
  command: string[];
  options: { tty?: boolean; workdir?: string; service?: string; env: string[] };
}

export function parseExecArgs(args: readonly string[]): ExecArgs | undefined {
  const options: ExecArgs['options'] = { env: [] };
  let index = 0;
  for (; index < args.length; index++) {
    const arg = args[index];
    if (!arg.startsWith('-') || arg === '-') break;
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    if ((flag === '-t' || flag === '--tty') && inline === undefined) options.tty = true;
    else if ((flag === '-T' || flag === '--no-tty') && inline === undefined) options.tty = false;
    else if (flag === '-w' || flag === '--workdir' || flag === '-e' || flag === '--env' || flag === '-s' || flag === '--service') {
      const value = inline ?? args[++index];
      if (value === undefined) return undefined;
      if (flag === '-w' || flag === '--workdir') options.workdir = value;
      else if (flag === '-s' || flag === '--service') options.service = value;
      else options.env.push(value);
    } else return undefined;
  }
  const workspace = args[index];
  if (workspace === undefined) return undefined;
  let command = args.slice(index + 1);
  if (command[0] === '--') command = command.slice(1);
  if (command.length === 0) return undefined;
  return { workspace, command, options };
}
