/**
 * The block `den config-ssh` keeps in ~/.ssh/config: between its two marker lines, one
 * `Host den.NAME` entry per workspace, each reaching the workspace through `den ssh --stdio` (the
 * HTTP(S) port and the API token; no SSH port needed). Pure: the command reads and writes files.
 */

export const BLOCK_START = '# ------------ START-DEN-CONFIG-SSH ------------';
export const BLOCK_END = '# ------------- END-DEN-CONFIG-SSH -------------';

export interface SshConfigEntry {
  /** the alias after `Host` (den.NAME, or den.NAME.OWNER for another user's workspace) */
  alias: string;
  /** OWNER/NAME, what `den ssh --stdio` is given */
  workspace: string;
}

export interface SshConfigBlockOptions {
  /** the command that runs den (node and the den script), each word quoted as needed */
  denCommand: string;
  /** the file with the gateway's host key (one line under `hostKeyAlias`) */
  knownHostsFile: string;
  hostKeyAlias: string;
}

/** The block's text (markers included), entries in the order given. */
export function renderSshConfigBlock(entries: SshConfigEntry[], options: SshConfigBlockOptions): string {
  const lines = [BLOCK_START, '# Written by `den config-ssh`: run it again after creating or deleting workspaces; edits here are replaced.'];
  for (const entry of entries) {
    lines.push(
      `Host ${entry.alias}`,
      `  HostName ${entry.alias}`,
      `  User ${entry.workspace.split('/')[1]}`,
      `  ProxyCommand ${options.denCommand} ssh --stdio ${entry.workspace}`,
      `  HostKeyAlias ${options.hostKeyAlias}`,
      `  UserKnownHostsFile ${quote(options.knownHostsFile)}`,
      '  StrictHostKeyChecking yes',
      '  ForwardAgent no',
      '  ServerAliveInterval 15',
    );
  }
  lines.push(BLOCK_END);
  return lines.join('\n') + '\n';
}

/**
 * `config` with den's block replaced by `block` (or appended when it has none); every line
 * outside the block stays exactly as it was. Refuses a file whose markers are broken (a start
 * without an end), rather than guess where the block ends.
 */
export function replaceSshConfigBlock(config: string, block: string): string {
  const lines = config.split('\n');
  const start = lines.indexOf(BLOCK_START);
  const end = lines.indexOf(BLOCK_END);
  if (start === -1 && end === -1) {
    if (config === '') return block;
    const separator = config.endsWith('\n\n') ? '' : config.endsWith('\n') ? '\n' : '\n\n';
    return config + separator + block;
  }
  if (start === -1 || end === -1 || end < start || lines.indexOf(BLOCK_START, start + 1) !== -1) {
    throw new Error(`The den block in the SSH config is damaged (its marker lines are missing, repeated or out of order). Remove the lines from "${BLOCK_START}" to "${BLOCK_END}" and run \`den config-ssh\` again.`);
  }
  const before = lines.slice(0, start).join('\n');
  const after = lines.slice(end + 1).join('\n');
  return (before === '' ? '' : before + '\n') + block + after;
}

/** The SSH alias of a workspace: den.NAME for the caller's own, den.NAME.OWNER for another user's. */
export function sshAlias(owner: string, name: string, me: string): string {
  return owner === me ? `den.${name}` : `den.${name}.${owner}`;
}

/** Quotes a word for ssh_config when it holds spaces or quotes. */
export function quote(word: string): string {
  return /^[\w@%+=:,./~-]+$/.test(word) ? word : `"${word.replace(/(["\\])/g, '\\$1')}"`;
}
