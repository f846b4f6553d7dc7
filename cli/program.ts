import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { Command } from 'commander';
import { collectParam, lazy, parsePositiveInt } from './actions.ts';
import { registerAdminCommands } from './program-admin.ts';
import { registerEnvironmentCommands } from './program-env.ts';
import { registerGroupCommands } from './program-groups.ts';
import { UsageError } from './errors.ts';

/**
 * The command tree: names, arguments, options, help and examples. Actions are lazy: each loads
 * its module (and through it the client and zod) only when that command runs, so `den --help`
 * and `den exec` do not pay for the rest.
 */
export function buildProgram(): Command {
  const program = new Command('den')
    .description('den: remote development workspaces, each with its own production-like environment.')
    .version(packageVersion(), '-V, --version', 'print the CLI version')
    .enablePositionalOptions()
    .exitOverride()
    .showHelpAfterError('(run the command with --help for usage)')
    .configureHelp({ sortSubcommands: false, showGlobalOptions: false })
    .addHelpText(
      'after',
      `
Configuration:
  den login saves the server URL and an API token in $XDG_CONFIG_HOME/den/config.json
  (default ~/.config/den/config.json, mode 0600). DEN_URL and DEN_TOKEN override it.

Workspaces are named NAME (yours) or OWNER/NAME.

Examples:
  den login http://127.0.0.1:7080 --first-user-username admin --first-user-password 's3cret-pass'
  den templates push templates/starter --activate
  den create demo --template starter --param greeting=hi --wait
  den exec demo -- sh -c 'echo $DEN_WORKSPACE_NAME; pwd'
  den logs demo -f`,
    );

  program
    .command('login')
    .description('Sign in to a den server and save the URL and an API token')
    .argument('[url]', 'the server URL, e.g. http://127.0.0.1:7080 (default: DEN_URL or the saved one)')
    .option('--token <token>', 'use an existing API token instead of a password')
    .option('-u, --username <name>', 'sign in with this username')
    .option('-p, --password <password>', 'the password (prompted for when omitted on a terminal)')
    .option('--token-name <name>', 'name of the API token this login creates', defaultTokenName())
    .option('--expires-in-days <days>', 'let the created token expire after this many days', parsePositiveInt)
    .option('--first-user-username <name>', 'on a new server: create the first (owner) user with this name, then sign in')
    .option('--first-user-password <password>', 'password of the first user')
    .option('--first-user-display-name <name>', 'display name of the first user')
    .option('--json', 'print the signed-in user as JSON')
    .addHelpText(
      'after',
      `
On a server without users, --first-user-* creates the owner account (for scripts); on a server
that already has users they sign in as that user instead.

Examples:
  den login http://127.0.0.1:7080 --first-user-username admin --first-user-password 's3cret-pass'
  den login https://den.example.com -u alice
  den login https://den.example.com --token "$DEN_API_TOKEN"`,
    )
    .action(lazy(() => import('./commands/auth.ts'), 'login'));

  program
    .command('logout')
    .description('Revoke the saved API token and forget the login')
    .action(lazy(() => import('./commands/auth.ts'), 'logout'));

  program
    .command('whoami')
    .description('Show the signed-in user and server')
    .option('--json', 'print as JSON')
    .action(lazy(() => import('./commands/auth.ts'), 'whoami'));

  registerWorkspaceCommands(program);
  registerEnvironmentCommands(program);
  registerAdminCommands(program);
  registerGroupCommands(program);
  // bin/den.js starts the server for `den server ...` and `den help server` before the CLI
  // loads (the two never import each other); listed here so `den --help` names it.
  program
    .command('server')
    .description('Start the den server (the control plane); `den server --help` lists its options')
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .action(() => {
      throw new UsageError('Run `den server` through the den command (bin/den.js), which starts the server.');
    });
  return program;
}

function registerWorkspaceCommands(program: Command): void {
  const workspaces = () => import('./commands/workspaces.ts');

  program
    .command('create')
    .description('Create a workspace from a template')
    .argument('<name>', 'workspace name (lowercase letters, digits, dashes)')
    .requiredOption('-t, --template <name>', 'template to create it from (its active version)')
    .option('--param <key=value>', 'a template parameter; repeat for several', collectParam, [])
    .option('--owner <username>', 'create it for another user (owner role only)')
    .option('--wait', 'stream the build log and wait until the workspace is running')
    .option('--json', 'print the workspace as JSON')
    .addHelpText(
      'after',
      `
Examples:
  den create demo --template starter --wait
  den create api --template node-api --param visits_start=100 --param log_requests=false --wait`,
    )
    .action(lazy(workspaces, 'create'));

  program
    .command('list')
    .alias('ls')
    .description('List workspaces')
    .option('-a, --all', 'every user\'s workspaces (owner role)')
    .option('--json', 'print as JSON')
    .option('-w, --watch', 'then print each status, build and agent change as it happens, until Ctrl-C')
    .action(lazy(workspaces, 'list'));

  program
    .command('show')
    .description('Show a workspace, its parameters and its last build')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .option('--json', 'print as JSON')
    .action(lazy(workspaces, 'show'));

  for (const [verb, description] of [
    ['start', 'Start a stopped workspace'],
    ['stop', 'Stop a workspace (its home is kept)'],
    ['restart', 'Stop and start a workspace'],
    ['update', 'Move a workspace to its template\'s active version and restart it'],
    ['delete', 'Delete a workspace and its home'],
  ] as const) {
    const command = program
      .command(verb)
      .description(description)
      .argument('<workspace>', 'NAME or OWNER/NAME')
      .option('--wait', 'stream the build log and wait for the build to finish')
      .option('--json', 'print the workspace and build as JSON');
    if (verb === 'start' || verb === 'restart' || verb === 'update') {
      command.option('--param <key=value>', 'change a parameter (mutable or ephemeral ones); repeat for several', collectParam, []);
    }
    command
      .addHelpText('after', `\nExample:\n  den ${verb} demo --wait`)
      .action(lazy(async () => ({ run: (await workspaces()).transition(verb) }), 'run'));
  }

  program
    .command('cancel')
    .description('Cancel the workspace\'s queued or running build (a running one is aborted and leaves the workspace failed; start, stop or delete it next)')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .option('--wait', 'wait until the build has ended')
    .option('--json', 'print the workspace and build as JSON')
    .addHelpText('after', `\nExample:\n  den cancel demo --wait`)
    .action(lazy(workspaces, 'cancel'));

  program
    .command('logs')
    .description('Print the build log of a workspace, with step timings, or the output of one of its services')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .option('-f, --follow', 'keep streaming until the build finishes (with --service: until the service ends)')
    .option('-b, --build <number>', 'a build number (default: the latest)', parsePositiveInt)
    .option('-s, --service <name>', 'an environment service\'s output instead of the build log')
    .option('-n, --tail <lines>', 'with --service: start with the last N lines (default: all)')
    .option('--json', 'print log entries as JSON lines')
    .addHelpText('after', `\nExamples:\n  den logs demo\n  den logs demo -f\n  den logs alice/demo --build 2\n  den logs demo --service db -f --tail 50`)
    .action(lazy(() => import('./commands/logs.ts'), 'logs'));

  program
    .command('ports')
    .description('List a workspace\'s apps and the ports listening in it, with their URLs through den')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .option('--json', 'print as JSON')
    .action(lazy(workspaces, 'ports'));

  program
    .command('share')
    .description('Share an app or port of a workspace: with its owner only (default), every signed-in den user, or anyone with the URL')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .argument('<target>', 'a port (8080) or an app of the template (web)')
    .requiredOption('--level <level>', 'owner, authenticated or public (at most the template\'s maxShare)')
    .option('--json', 'print as JSON')
    .action(lazy(workspaces, 'share'));

  const sync = program.command('sync').description('Live sync of workspace folders into environment services (a template\'s `sync`)');
  sync
    .command('status')
    .description('Show each synced folder: state, pending files, the last applied change and its latency, both hashes, the files resyncs sent again, conflicts (two-way) and the last restart, the last error')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .option('--json', 'print as JSON')
    .action(lazy(() => import('./commands/sync.ts'), 'status'));
  sync
    .command('restart')
    .description('Start the syncs again (all, or one service\'s): a full copy, then watching; after an error was fixed')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .argument('[service]', 'only this service\'s syncs')
    .option('--json', 'print as JSON')
    .action(lazy(() => import('./commands/sync.ts'), 'restart'));

  program
    .command('events')
    .description('Show what happened to a workspace that its owner should know (newest first), such as its agent connection being replaced')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .option('--json', 'print as JSON')
    .action(lazy(workspaces, 'events'));

  program
    .command('exec')
    .description('Run a command in a workspace; stdin, stdout and stderr are connected and its exit code is den\'s')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .argument('<command...>', 'the command and its arguments (after --)')
    .option('-t, --tty', 'allocate a terminal (default: when stdin and stdout are terminals)')
    .option('-T, --no-tty', 'never allocate a terminal')
    .option('-w, --workdir <dir>', 'working directory in the workspace')
    .option('-s, --service <name>', 'run in the environment service NAME (through the agent beside it; the service needs `agent: true`)')
    .option('-e, --env <key=value>', 'set an environment variable; repeat for several', collectParam, [])
    .passThroughOptions()
    .addHelpText(
      'after',
      `
Examples:
  den exec demo -- sh -c 'echo $DEN_WORKSPACE_NAME; pwd'
  echo hello | den exec demo -- cat
  den exec -e DEBUG=1 demo -- npm test
  den exec --service api demo -- ps aux`,
    )
    .action(lazy(() => import('./commands/exec.ts'), 'exec'));

  registerTerminalCommands(program);
  registerSshCommands(program);
}

function registerSshCommands(program: Command): void {
  program
    .command('ssh')
    .description('Open a shell or run a command in a workspace over SSH (the OpenSSH client through den\'s HTTP(S) port)')
    .argument('[workspace]', 'NAME or OWNER/NAME')
    .argument('[command...]', 'a command to run instead of a shell (after --)')
    .option('--stdio', 'be the ProxyCommand: join stdin/stdout to the workspace\'s SSH tunnel')
    .option('--host-key', 'print the fingerprint and public key of den\'s SSH host key')
    .passThroughOptions()
    .addHelpText(
      'after',
      `
Examples:
  den ssh demo
  den ssh demo -- uname -a
  ssh -o ProxyCommand='den ssh --stdio demo' demo   (what den config-ssh writes for you)
  den ssh --host-key`,
    )
    .action(async (workspace: string | undefined, command: string[], options: { stdio?: boolean; hostKey?: boolean }) => {
      // the ProxyCommand runs on every ssh connect: its module loads no client library nor zod
      if (options.stdio) return (await import('./commands/ssh-stdio.ts')).sshStdio(workspace);
      return (await import('./commands/ssh.ts')).ssh(workspace, command, options);
    });

  program
    .command('config-ssh')
    .description('Write a Host den.NAME entry per workspace into ~/.ssh/config (for ssh, scp, VS Code and JetBrains)')
    .option('--dry-run', 'print the block without writing it')
    .option('--all', 'owners: include every user\'s workspaces (as den.NAME.OWNER)')
    .addHelpText(
      'after',
      `
den keeps its entries between two marker lines and never touches the rest of the file; run it
again after creating or deleting workspaces.

Examples:
  den config-ssh && ssh den.demo
  den config-ssh --dry-run`,
    )
    .action(lazy(() => import('./commands/ssh.ts'), 'configSsh'));

  program
    .command('port-forward')
    .description('Forward local ports to ports (or unix sockets) in a workspace, over den\'s HTTP(S) port')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .argument('<forwards...>', 'LOCAL:REMOTE (8080:3000), PORT (3000) or LOCAL:/path/to/socket')
    .addHelpText(
      'after',
      `
Examples:
  den port-forward demo 8080:3000
  den port-forward demo 5432 6379:6379`,
    )
    .action(lazy(() => import('./commands/port-forward.ts'), 'portForward'));
}

function registerTerminalCommands(program: Command): void {
  const terminal = () => import('./commands/terminal.ts');
  const group = program
    .command('terminal')
    .description('Attach this terminal to a persistent terminal session in a workspace (detach: Ctrl-\\ then d)')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .option('-s, --session <id>', 'reattach to this session (see `den terminal list WS`)')
    .option('-n, --new', 'start a new session even if a detached one exists')
    .option('-c, --command <cmd>', 'for a new session: run this (with sh -c) instead of the login shell')
    .option('--service <name>', 'a session inside environment service NAME (through the agent beside it; the service needs `agent: true`)')
    .addHelpText(
      'after',
      `
Without --session or --new, den reattaches to the most recently detached session in the
workspace, or starts a new one when there is none.

Detach: press Ctrl-\\ then d. The session keeps running in the workspace (with its screen and
programs) and den prints how to reattach; the dashboard's terminal shows the same sessions.
Ctrl-\\ twice sends one Ctrl-\\ to the session. When the shell exits, den exits with its code.

Examples:
  den terminal demo
  den terminal demo --session 3kX9f2
  den terminal demo --new --command htop
  den terminal demo --service api
  den terminal list demo
  den terminal close demo 3kX9f2`,
    )
    .action(lazy(terminal, 'terminal'));
  group
    .command('list')
    .alias('ls')
    .description('List the terminal sessions of a workspace')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .option('--json', 'print as JSON')
    .option('--service <name>', 'the sessions inside environment service NAME')
    .action(lazy(terminal, 'list'));
  group
    .command('close')
    .description('End a terminal session (its shell and programs are hung up)')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .argument('<id>', 'the session id')
    .option('--service <name>', 'a session inside environment service NAME')
    .action(lazy(terminal, 'close'));
  program
    .command('terminals')
    .description('List the terminal sessions of a workspace (same as `den terminal list`)')
    .argument('<workspace>', 'NAME or OWNER/NAME')
    .option('--json', 'print as JSON')
    .action(lazy(terminal, 'list'));
}

function defaultTokenName(): string {
  return `den CLI on ${hostname()}`.slice(0, 64);
}

/** den's version from package.json: two levels up from a bundle chunk (dist/den-chunks/), one from cli/. */
function packageVersion(): string {
  for (const path of ['../package.json', '../../package.json']) {
    try {
      const manifest = JSON.parse(readFileSync(new URL(path, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (manifest.name === 'den' && manifest.version) return manifest.version;
    } catch {
      // not at this level
    }
  }
  return 'unknown';
}
