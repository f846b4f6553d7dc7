import { describe, expect, test } from 'vitest';
import { parseExecArgs } from './exec-args.ts';
import { buildProgram } from './program.ts';

/** What commander makes of the same `den exec` line (the slow path the fast one must match). */
async function viaCommander(args: string[]) {
  const { Command } = await import('commander');
  let captured: unknown;
  const program = buildProgram();
  const exec = program.commands.find((command) => command.name() === 'exec') as InstanceType<typeof Command>;
  exec.action((workspace: string, command: string[], options: Record<string, unknown>) => {
    captured = { workspace, command: command[0] === '--' ? command.slice(1) : command, options: { ...options } };
  });
  await program.parseAsync(['exec', ...args], { from: 'user' });
  return captured;
}

describe('parseExecArgs', () => {
  const lines = [
    ['demo', '--', 'sh', '-c', 'echo $DEN_WORKSPACE_NAME; pwd'],
    ['demo', 'ls', '-la'],
    ['-t', 'alice/demo', '--', 'bash'],
    ['-T', '-w', '/tmp', '-e', 'A=1', '--env', 'B=2', 'demo', '--', 'env'],
    ['--workdir=/srv', '--env=C=3', 'demo', 'true'],
    ['-s', 'api', 'demo', '--', 'ps'],
    ['--service=db', '-T', 'alice/demo', 'psql'],
  ];

  test.each(lines)('reads %j as commander does', async (...args) => {
    const fast = parseExecArgs(args);
    expect(fast).toBeDefined();
    const slow = (await viaCommander(args)) as { workspace: string; command: string[]; options: Record<string, unknown> };
    expect(fast!.workspace).toBe(slow.workspace);
    expect(fast!.command).toEqual(slow.command);
    expect(fast!.options.tty).toBe(slow.options.tty);
    expect(fast!.options.workdir).toBe(slow.options.workdir);
    expect(fast!.options.service).toBe(slow.options.service);
    expect(fast!.options.env).toEqual(slow.options.env);
  });

  test('leaves help, unknown options and a missing command to commander', () => {
    expect(parseExecArgs(['--help'])).toBeUndefined();
    expect(parseExecArgs(['--frobnicate', 'demo', 'true'])).toBeUndefined();
    expect(parseExecArgs(['demo'])).toBeUndefined();
    expect(parseExecArgs(['demo', '--'])).toBeUndefined();
    expect(parseExecArgs(['-w'])).toBeUndefined();
  });
});
