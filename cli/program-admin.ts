import type { Command } from 'commander';
import { lazy, parsePositiveInt } from './actions.ts';

/** The administrative command groups: templates, API tokens, users and SSH keys. */
export function registerAdminCommands(program: Command): void {
  const templates = () => import('./commands/templates.ts');
  const group = program
    .command('templates')
    .alias('template')
    .description('Push, inspect and activate templates')
    .addHelpText(
      'after',
      `
Examples:
  den templates push templates/starter --activate -m "first version"
  den templates versions starter
  den templates activate starter 2
  den templates pull starter ./starter --version 1
  den templates schema > template.schema.json`,
    );
  group
    .command('push')
    .description('Upload a template folder (with template.yaml) as a new version')
    .argument('<dir>', 'the template folder')
    .option('--activate', 'make the new version the active one')
    .option('-m, --message <text>', 'a note on what changed in this version', '')
    .option('--json', 'print the new version as JSON')
    .action(lazy(templates, 'push'));
  group.command('list').alias('ls').description('List templates').option('--json', 'print as JSON').action(lazy(templates, 'list'));
  group
    .command('show')
    .description('Show a template and its parameters')
    .argument('<name>', 'template name')
    .option('--version <number>', 'a version (default: the active one)', parsePositiveInt)
    .option('--json', 'print as JSON')
    .action(lazy(templates, 'show'));
  group
    .command('versions')
    .description('List the versions of a template')
    .argument('<name>', 'template name')
    .option('--json', 'print as JSON')
    .action(lazy(templates, 'versions'));
  group
    .command('activate')
    .description('Make a version the active one (new workspaces and `den update` use it)')
    .argument('<name>', 'template name')
    .argument('<version>', 'version number', parsePositiveInt)
    .action(lazy(templates, 'activate'));
  group
    .command('pull')
    .description('Download the files of a template version into a folder')
    .argument('<name>', 'template name')
    .argument('<dir>', 'folder to write into (created if missing)')
    .option('--version <number>', 'a version (default: the active one)', parsePositiveInt)
    .option('--force', 'overwrite files that already exist')
    .action(lazy(templates, 'pull'));
  group
    .command('schema')
    .description('Print the JSON Schema of template.yaml (for editor completion)')
    .action(lazy(templates, 'schema'));

  const tokens = () => import('./commands/account.ts');
  const tokenGroup = program.command('tokens').description('Manage your API tokens');
  tokenGroup.command('list').alias('ls').description('List your API tokens').option('--json', 'print as JSON').action(lazy(tokens, 'listTokens'));
  tokenGroup
    .command('create')
    .description('Create an API token (printed once)')
    .argument('<name>', 'a name to recognise it by')
    .option('--expires-in-days <days>', 'let it expire after this many days', parsePositiveInt)
    .option('--json', 'print as JSON')
    .addHelpText('after', `\nExample:\n  DEN_TOKEN=$(den tokens create ci --expires-in-days 30 --json | jq -r .token)`)
    .action(lazy(tokens, 'createToken'));
  tokenGroup.command('revoke').description('Revoke an API token').argument('<id>', 'token id (from `den tokens list`)').action(lazy(tokens, 'revokeToken'));

  const users = () => import('./commands/account.ts');
  const userGroup = program.command('users').description('Manage users (owner role)');
  userGroup.command('list').alias('ls').description('List users').option('--json', 'print as JSON').action(lazy(users, 'listUsers'));
  userGroup
    .command('create')
    .description('Create a user')
    .argument('<username>', 'lowercase letters, digits and dashes')
    .requiredOption('-p, --password <password>', 'initial password (at least 8 characters)')
    .option('--role <role>', 'owner, template-admin or member', 'member')
    .option('--display-name <name>', 'display name')
    .option('--json', 'print as JSON')
    .addHelpText('after', `\nExample:\n  den users create alice --password 'change-me-soon' --role template-admin`)
    .action(lazy(users, 'createUser'));
  userGroup
    .command('set-role')
    .description('Change a user\'s role')
    .argument('<username>', 'the user')
    .argument('<role>', 'owner, template-admin or member')
    .action(lazy(users, 'setRole'));
  userGroup
    .command('suspend')
    .description('Suspend a user (they can no longer sign in or use tokens)')
    .argument('<username>', 'the user')
    .option('--undo', 'lift the suspension')
    .action(lazy(users, 'suspendUser'));
  userGroup.command('delete').description('Delete a user').argument('<username>', 'the user').action(lazy(users, 'deleteUser'));

  const keys = () => import('./commands/account.ts');
  const keyGroup = program.command('keys').description('Manage your SSH public keys');
  keyGroup.command('list').alias('ls').description('List your SSH keys').option('--json', 'print as JSON').action(lazy(keys, 'listKeys'));
  keyGroup
    .command('add')
    .description('Register an SSH public key')
    .argument('<key>', 'a public key file (e.g. ~/.ssh/id_ed25519.pub), the key itself, or - for stdin')
    .option('--name <name>', 'a name (default: the key\'s comment)')
    .option('--json', 'print as JSON')
    .addHelpText('after', `\nExample:\n  den keys add ~/.ssh/id_ed25519.pub`)
    .action(lazy(keys, 'addKey'));
  keyGroup.command('remove').alias('rm').description('Remove an SSH key').argument('<id>', 'key id (from `den keys list`)').action(lazy(keys, 'removeKey'));
}
