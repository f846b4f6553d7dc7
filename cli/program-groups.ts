import type { Command } from 'commander';
import { lazy } from './actions.ts';

/** `den groups ...`: groups of users, which a workspace's owner may grant the environment's read-only view. */
export function registerGroupCommands(program: Command): void {
  const groups = () => import('./commands/groups.ts');
  const group = program
    .command('groups')
    .description('Groups of users (den\'s owners set them; anyone may grant one an environment with `den env grant WS --group NAME`)')
    .addHelpText(
      'after',
      `
Examples:
  den groups create backend --description "the API team"
  den groups add backend alice
  den groups show backend
  den groups remove backend alice     # alice stops seeing what the group was granted, at once
  den groups history backend`,
    );
  group.command('list').alias('ls').description('List groups with their member counts').option('--json', 'print as JSON').action(lazy(groups, 'listGroups'));
  group
    .command('show')
    .description('A group and its members')
    .argument('<group>', 'the group')
    .option('--json', 'print as JSON')
    .action(lazy(groups, 'showGroup'));
  group
    .command('create')
    .description('Create a group (owner role)')
    .argument('<group>', 'lowercase letters, digits and dashes')
    .option('--description <text>', 'what the group is')
    .action(lazy(groups, 'createGroup'));
  group
    .command('delete')
    .description('Delete a group; its members lose what it was granted (owner role)')
    .argument('<group>', 'the group')
    .action(lazy(groups, 'deleteGroup'));
  group
    .command('add')
    .description('Add users to a group (owner role)')
    .argument('<group>', 'the group')
    .argument('<users...>', 'usernames')
    .action(lazy(groups, 'addMembers'));
  group
    .command('remove')
    .alias('rm')
    .description('Remove users from a group (owner role)')
    .argument('<group>', 'the group')
    .argument('<users...>', 'usernames')
    .action(lazy(groups, 'removeMembers'));
  group
    .command('history')
    .description('Who created, deleted or changed groups, newest first (owner role)')
    .argument('[group]', 'one group (also after it was deleted)')
    .option('--json', 'print as JSON')
    .action(lazy(groups, 'groupHistory'));
}
