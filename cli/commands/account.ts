import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { roleSchema, type RoleName } from '../../protocol/users.ts';
import { connect } from '../context.ts';
import { UsageError } from '../errors.ts';
import { formatAge, print, printJson, printTable } from '../output.ts';

/** `den tokens`, `den users`, `den keys`: the signed-in user's credentials and (owners) user management. */

export async function listTokens(options: { json?: boolean }): Promise<void> {
  const { tokens } = await connect().client.listTokens();
  if (options.json) return printJson(tokens);
  printTable(
    tokens,
    [
      { header: 'id', value: (t) => t.id },
      { header: 'name', value: (t) => t.name },
      { header: 'created', value: (t) => formatAge(t.createdAt) },
      { header: 'last used', value: (t) => (t.lastUsedAt ? formatAge(t.lastUsedAt) : 'never') },
      { header: 'expires', value: (t) => t.expiresAt?.slice(0, 10) ?? 'never' },
    ],
    'You have no API tokens. Create one with `den tokens create NAME`.',
  );
}

export async function createToken(name: string, options: { expiresInDays?: number; json?: boolean }): Promise<void> {
  const token = await connect().client.createToken({ name, expiresInDays: options.expiresInDays });
  if (options.json) return printJson(token);
  print(token.token);
  process.stderr.write(`Created token '${token.name}' (${token.id}). It is shown only this once; store it now.\n`);
}

export async function revokeToken(id: string): Promise<void> {
  await connect().client.revokeToken(id);
  print(`Revoked token ${id}.`);
}

export async function listUsers(options: { json?: boolean }): Promise<void> {
  const { users } = await connect().client.listUsers();
  if (options.json) return printJson(users);
  printTable(
    users,
    [
      { header: 'username', value: (u) => u.username },
      { header: 'name', value: (u) => u.displayName },
      { header: 'role', value: (u) => u.role },
      { header: 'status', value: (u) => (u.suspended ? 'suspended' : 'active') },
      { header: 'created', value: (u) => formatAge(u.createdAt) },
    ],
    'There are no users.',
  );
}

export async function createUser(
  username: string,
  options: { password: string; role: string; displayName?: string; json?: boolean },
): Promise<void> {
  const user = await connect().client.createUser({
    username,
    password: options.password,
    role: parseRole(options.role),
    displayName: options.displayName,
  });
  if (options.json) return printJson(user);
  print(`Created user '${user.username}' (${user.role}).`);
}

export async function setRole(username: string, role: string): Promise<void> {
  const user = await connect().client.updateUser(username, { role: parseRole(role) });
  print(`'${user.username}' is now ${user.role}.`);
}

export async function suspendUser(username: string, options: { undo?: boolean }): Promise<void> {
  const user = await connect().client.updateUser(username, { suspended: !options.undo });
  print(user.suspended ? `Suspended '${user.username}'.` : `'${user.username}' is active again.`);
}

export async function deleteUser(username: string): Promise<void> {
  await connect().client.deleteUser(username);
  print(`Deleted user '${username}'.`);
}

export async function listKeys(options: { json?: boolean }): Promise<void> {
  const { keys } = await connect().client.listSshKeys();
  if (options.json) return printJson(keys);
  printTable(
    keys,
    [
      { header: 'id', value: (k) => k.id },
      { header: 'name', value: (k) => k.name },
      { header: 'type', value: (k) => k.type },
      { header: 'fingerprint', value: (k) => k.fingerprint },
      { header: 'added', value: (k) => formatAge(k.createdAt) },
    ],
    'You have no SSH keys. Add one with `den keys add ~/.ssh/id_ed25519.pub`.',
  );
}

export async function addKey(source: string, options: { name?: string; json?: boolean }): Promise<void> {
  const publicKey = readPublicKey(source);
  const key = await connect().client.addSshKey({ publicKey, name: options.name });
  if (options.json) return printJson(key);
  print(`Added SSH key '${key.name}' (${key.fingerprint}).`);
}

export async function removeKey(id: string): Promise<void> {
  await connect().client.removeSshKey(id);
  print(`Removed SSH key ${id}.`);
}

function parseRole(value: string): RoleName {
  const parsed = roleSchema.safeParse(value);
  if (!parsed.success) throw new UsageError(`'${value}' is not a role. Use owner, template-admin or member.`);
  return parsed.data;
}

/** The key itself ("ssh-ed25519 AAAA..."), `-` for stdin, or a file (~ expanded). */
function readPublicKey(source: string): string {
  if (/^(ssh-|ecdsa-|sk-)/.test(source)) return source.trim();
  const path = source === '-' ? 0 : source.replace(/^~(?=\/|$)/, homedir());
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (error) {
    throw new UsageError(`Cannot read the public key from ${source}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}. Give a .pub file or the key itself.`);
  }
}
