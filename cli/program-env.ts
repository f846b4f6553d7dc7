import type { Command } from 'commander';
import { lazy, parsePositiveInt } from './actions.ts';

/** `den env ...` (the environment: view, logs, tasks, teammates) and `den test`. */
export function registerEnvironmentCommands(program: Command): void {
  const env = () => import('./commands/env.ts');
  const group = program
    .command('env')
    .description('The environment of a workspace: its services, logs across them, tasks, and teammates who may see it')
    .addHelpText(
      'after',
      `
Examples:
  den env show shop
  den env logs shop -f
  den env logs shop api db --tail 20
  den env run shop seed
  den env grant shop alice          # alice sees services, status, logs and app URLs read-only
  den env grant shop --group backend
  den env grants shop
  den env revoke shop alice
  den env shared                    # what others shared with you
  den env show bob/shop             # as a teammate of bob`,
    );
  group
    .command('show')
    .description('Services with status and version, apps, tasks and tests with their latest runs')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .option('--json', 'print as JSON')
    .action(lazy(env, 'show'));
  group
    .command('logs')
    .description('Logs of the environment\'s services (all, or those named), each line prefixed with its service and time')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .argument('[services...]', 'the services to show (default: all)')
    .option('-f, --follow', 'keep streaming new lines')
    .option('-n, --tail <lines>', 'start with the last N lines of each service', parsePositiveInt, 100)
    .option('--json', 'print log lines as JSON')
    .action(lazy(env, 'logs'));
  group
    .command('run')
    .description('Run a task of the environment now (it also runs at start when its version changed); exits with its status')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .argument('<task>', 'the task\'s name')
    .option('--json', 'print output and result as JSON lines')
    .action(lazy(env, 'runTask'));
  group
    .command('grant')
    .description('Let another den user, or the members of a group, see this workspace\'s environment read-only (never its terminal, exec, files or secrets)')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .argument('[user]', 'the teammate\'s username')
    .option('--group <name>', 'grant a group instead: whoever is in it (`den groups show NAME`)')
    .action(lazy(env, 'grant'));
  group
    .command('revoke')
    .description('Take a teammate\'s (or a group\'s) view of the environment back')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .argument('[user]', 'the teammate\'s username')
    .option('--group <name>', 'revoke a group\'s grant instead')
    .action(lazy(env, 'revoke'));
  group
    .command('shared')
    .description('The environments others let you see, directly or through a group')
    .option('--json', 'print as JSON')
    .action(lazy(env, 'shared'));
  group
    .command('grants')
    .description('List the teammates who may see the environment')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .option('--json', 'print as JSON')
    .action(lazy(env, 'grants'));

  program
    .command('test')
    .description('Run the environment\'s tests (all, or the one named) in their services; a passed result of an unchanged version is shown as cached')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .argument('[name]', 'one test (default: all of them, in turn)')
    .option('--force', 'run even when a passed result of the same version is cached')
    .option('--history', 'list earlier runs instead of running')
    .option('--json', 'print output and results as JSON lines')
    .addHelpText('after', `\nExamples:\n  den test shop\n  den test shop smoke --force\n  den test shop --history`)
    .action(lazy(env, 'test'));
}
