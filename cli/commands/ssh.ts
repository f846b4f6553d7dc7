import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import type { SshInfo } from '../../protocol/ssh.ts';
import { configPath } from '../config.ts';
import { connect, type Session } from '../context.ts';
import { ExitCode, UsageError } from '../errors.ts';
import { note, print } from '../output.ts';
import { quote, renderSshConfigBlock, replaceSshConfigBlock, sshAlias } from '../ssh-config.ts';

/**
 * `den ssh WS [-- CMD]`: the real ssh client, reaching the workspace through `den ssh --stdio`
 * (a ProxyCommand over den's HTTP(S) port with the API token), the gateway's host key pinned in
 * den's own known_hosts file (ssh-stdio.ts is that ProxyCommand). `den ssh --host-key` prints
 * the gateway's fingerprint.
 */
export async function ssh(reference: string | undefined, command: string[], options: { hostKey?: boolean }): Promise<void> {
  const session = connect();
  if (options.hostKey) {
    const info = await fetchSshInfo(session);
    print(`${info.hostKey.fingerprint}\n${info.hostKey.publicKey}${info.port === null ? '\n(this server has no SSH port; use `den ssh` or `den config-ssh`)' : `\nSSH port: ${info.port}`}`);
    return;
  }
  if (!reference) throw new UsageError('Name the workspace, for example `den ssh demo`.');
  const ref = await session.workspaceRef(reference);
  if (command[0] === '--') command = command.slice(1);
  const known = await pinHostKey(session);
  const args = [
    '-o', `ProxyCommand=${denCommand()} ssh --stdio ${ref.owner}/${ref.name}`,
    '-o', `HostKeyAlias=${known.alias}`,
    '-o', `UserKnownHostsFile=${known.file}`,
    '-o', 'StrictHostKeyChecking=yes',
    '-o', 'ServerAliveInterval=15',
    '-l', ref.name,
    ...(command.length > 0 ? [] : ['-t']),
    sshAlias(ref.owner, ref.name, await session.username()),
    ...(command.length > 0 ? ['--', ...command] : []),
  ];
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn('ssh', args, { stdio: 'inherit' });
    child.on('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'ENOENT' ? new UsageError('`den ssh` runs the OpenSSH client, which is not installed here (on Debian: apt-get install openssh-client).', 1) : error));
    child.on('exit', (exitCode, signal) => resolve(exitCode ?? (signal ? 128 + 15 : 1)));
  });
  if (code !== 0) throw new ExitCode(code);
}

/**
 * `den config-ssh`: writes (or refreshes) den's block in ~/.ssh/config with a `Host den.NAME`
 * entry per workspace the user can reach; lines outside the block are never touched.
 */
export async function configSsh(options: { dryRun?: boolean; all?: boolean }): Promise<void> {
  const session = connect();
  const me = await session.username();
  const workspaces = await listAll(session, options.all);
  const entries = workspaces.map((workspace) => ({ alias: sshAlias(workspace.owner, workspace.name, me), workspace: `${workspace.owner}/${workspace.name}` }));
  const known = options.dryRun ? { alias: hostKeyAlias(session), file: knownHostsPath() } : await pinHostKey(session);
  const block = renderSshConfigBlock(entries, { denCommand: denCommand(), knownHostsFile: known.file, hostKeyAlias: known.alias });
  const path = join(homedir(), '.ssh', 'config');
  const current = existsSync(path) ? readFileSync(path, 'utf8') : '';
  let next: string;
  try {
    next = replaceSshConfigBlock(current, block);
  } catch (error) {
    throw new UsageError((error as Error).message, 1);
  }
  if (options.dryRun) {
    print(block.trimEnd());
    note(next === current ? `${path} is up to date.` : `Would update ${path} (dry run: nothing written).`);
    return;
  }
  if (next === current) {
    note(`${path} is up to date (${entries.length} workspace${entries.length === 1 ? '' : 's'}).`);
    return;
  }
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeAtomically(path, next, 0o600);
  note(`Updated ${path}: ${entries.length} workspace${entries.length === 1 ? '' : 's'}. Connect with \`ssh ${entries[0]?.alias ?? 'den.NAME'}\`.`);
}

/** Every workspace the caller lists, page by page (the API serves at most PAGE at a time). */
async function listAll(session: Session, all: boolean | undefined) {
  const PAGE = 500;
  const first = await session.client.workspaces.list({ all, limit: PAGE, offset: 0 });
  const workspaces = [...first.workspaces];
  while (workspaces.length < first.total) {
    const page = await session.client.workspaces.list({ all, limit: PAGE, offset: workspaces.length });
    if (page.workspaces.length === 0) break;
    workspaces.push(...page.workspaces);
  }
  return workspaces;
}

/** What runs den again from a ProxyCommand: this Node and this script, quoted for ssh_config. */
function denCommand(): string {
  return `${quote(process.execPath)} ${quote(process.argv[1])}`;
}

function fetchSshInfo(session: Session): Promise<SshInfo> {
  return session.client.sshInfo();
}

/** One known_hosts line per den server, beside den's config: ssh checks the gateway's key strictly without asking. */
function knownHostsPath(): string {
  return join(dirname(configPath()), 'known_hosts');
}

/** The name the host key is known by: one per den server (its host and port), whatever the workspace. */
function hostKeyAlias(session: Session): string {
  const url = new URL(session.client.url);
  return `den-${url.hostname}${url.port ? `-${url.port}` : ''}`;
}

/** Fetches the gateway's host key over the API (TLS and the token vouch for it) and records it in den's known_hosts. */
async function pinHostKey(session: Session): Promise<{ alias: string; file: string }> {
  const info = await fetchSshInfo(session);
  const alias = hostKeyAlias(session);
  const file = knownHostsPath();
  const others = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((line) => line !== '' && !line.startsWith(`${alias} `)) : [];
  const next = [...others, `${alias} ${info.hostKey.publicKey}`].join('\n') + '\n';
  if (!existsSync(file) || readFileSync(file, 'utf8') !== next) {
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    writeAtomically(file, next, 0o600);
  }
  return { alias, file };
}

/** Writes through a temporary file and a rename, keeping an existing file's mode (ssh refuses a config others may write). */
function writeAtomically(path: string, text: string, mode: number): void {
  const temporary = `${path}.den-${process.pid}`;
  writeFileSync(temporary, text, { mode });
  if (existsSync(path)) chmodSync(temporary, statSync(path).mode & 0o777);
  renameSync(temporary, path);
}
