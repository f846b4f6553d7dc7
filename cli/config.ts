import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { UsageError } from './errors.ts';

/**
 * The CLI's saved login: `$XDG_CONFIG_HOME/den/config.json` (default ~/.config/den), mode 0600
 * because it holds an API token. `DEN_URL` and `DEN_TOKEN` override it (CI, scripts).
 * Validated by hand rather than with zod: it is read on every command, and zod is the largest
 * part of the CLI's start-up time.
 */
export interface SavedConfig {
  url: string;
  token: string;
  /** who the token belongs to, so `den create demo` knows `demo` means `<username>/demo` */
  username?: string;
  /** the id of the API token (for `den logout` to revoke it) */
  tokenId?: string;
}

export interface EffectiveConfig {
  url?: string;
  token?: string;
  /** only when the token is the saved one (DEN_TOKEN may belong to someone else) */
  username?: string;
  tokenId?: string;
  source: { url: 'env' | 'file' | 'none'; token: 'env' | 'file' | 'none' };
}

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(base, 'den', 'config.json');
}

/** The saved config, or undefined when there is none. A broken file is a usage error with its path. */
export function readSavedConfig(env: NodeJS.ProcessEnv = process.env): SavedConfig | undefined {
  const path = configPath(env);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new UsageError(`Cannot read ${path}: ${(error as Error).message}. Fix its permissions or run \`den login\` again.`, 1);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new UsageError(`${path} is not valid JSON. Delete it and run \`den login\` again.`, 1);
  }
  const record = value as Record<string, unknown>;
  if (!record || typeof record !== 'object' || typeof record.url !== 'string' || typeof record.token !== 'string') {
    throw new UsageError(`${path} does not hold a url and a token. Delete it and run \`den login\` again.`, 1);
  }
  return {
    url: record.url,
    token: record.token,
    username: typeof record.username === 'string' ? record.username : undefined,
    tokenId: typeof record.tokenId === 'string' ? record.tokenId : undefined,
  };
}

export function effectiveConfig(env: NodeJS.ProcessEnv = process.env): EffectiveConfig {
  const saved = readSavedConfig(env);
  const url = env.DEN_URL || saved?.url;
  const token = env.DEN_TOKEN || saved?.token;
  const tokenIsSaved = !!saved && token === saved.token;
  return {
    url,
    token,
    username: tokenIsSaved ? saved.username : undefined,
    tokenId: tokenIsSaved ? saved.tokenId : undefined,
    source: {
      url: env.DEN_URL ? 'env' : saved ? 'file' : 'none',
      token: env.DEN_TOKEN ? 'env' : saved ? 'file' : 'none',
    },
  };
}

/** The effective login, or exit 1 with a sentence saying how to log in. */
export function requireLogin(env: NodeJS.ProcessEnv = process.env): EffectiveConfig & { url: string; token: string } {
  const config = effectiveConfig(env);
  if (!config.url || !config.token) {
    throw new UsageError(
      config.url
        ? `You are not logged in to ${config.url}. Run \`den login\` first (or set DEN_TOKEN).`
        : 'You are not logged in. Run `den login URL` first (or set DEN_URL and DEN_TOKEN).',
      1,
    );
  }
  return config as EffectiveConfig & { url: string; token: string };
}

/** Writes the config atomically with mode 0600 (the directory 0700), so the token is never world-readable. */
export function writeSavedConfig(config: SavedConfig, env: NodeJS.ProcessEnv = process.env): string {
  const path = configPath(env);
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  chmodSync(temporary, 0o600);
  renameSync(temporary, path);
  return path;
}

export function removeSavedConfig(env: NodeJS.ProcessEnv = process.env): void {
  rmSync(configPath(env), { force: true });
}
