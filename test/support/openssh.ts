import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The real OpenSSH client (Debian's openssh-client) for tests and benchmarks of the SSH gateway:
 * key generation and runs of ssh/scp/sftp with a config that reads nothing of the user's own
 * (no ~/.ssh/config, no agent, no known_hosts).
 */

export const SSH_CLIENT_PRESENT = existsSync('/usr/bin/ssh') && existsSync('/usr/bin/ssh-keygen');
export const SFTP_SERVER_PRESENT = existsSync('/usr/lib/openssh/sftp-server');
export const SSHD_PRESENT = existsSync('/usr/sbin/sshd');

/** Generates a key pair without a passphrase; returns the private key's path (the public one is `.pub` beside it). */
export function generateKey(dir: string, name: string, type: 'ed25519' | 'ecdsa' | 'rsa' = 'ed25519'): string {
  const path = join(dir, name);
  execFileSync('ssh-keygen', ['-q', '-t', type, ...(type === 'rsa' ? ['-b', '2048'] : []), '-N', '', '-C', name, '-f', path]);
  return path;
}

/** Options that make ssh, scp and sftp independent of the machine's user config. */
export function isolatedOptions(key: string | undefined, extra: string[] = []): string[] {
  return [
    '-F', '/dev/null',
    ...(key ? ['-i', key] : []),
    '-o', 'IdentitiesOnly=yes',
    '-o', 'IdentityAgent=none',
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'BatchMode=yes',
    '-o', 'LogLevel=ERROR',
    '-o', 'ConnectTimeout=10',
    ...extra,
  ];
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end with `input` on stdin; killed after `timeoutMs`. */
export function run(command: string, args: string[], options: { input?: string | Buffer; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => {});
    child.stdin.end(options.input ?? '');
  });
}

/** Starts a long-running ssh (a -L or -D forward); resolves once it is running. Kill it when done. */
export function spawnSsh(args: string[]): ChildProcess {
  return spawn('ssh', args, { stdio: ['ignore', 'pipe', 'pipe'] });
}
