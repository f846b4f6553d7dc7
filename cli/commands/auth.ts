import { DenClient } from '../../client/client.ts';
import type { LoginResult } from '../../protocol/users.ts';
import { effectiveConfig, readSavedConfig, removeSavedConfig, writeSavedConfig } from '../config.ts';
import { connect } from '../context.ts';
import { normaliseServerUrl } from '../refs.ts';
import { UsageError } from '../errors.ts';
import { note, print, printJson, renderFields } from '../output.ts';
import { promptHidden } from '../prompt.ts';

interface LoginOptions {
  token?: string;
  username?: string;
  password?: string;
  tokenName: string;
  expiresInDays?: number;
  firstUserUsername?: string;
  firstUserPassword?: string;
  firstUserDisplayName?: string;
  json?: boolean;
}

/**
 * `den login`: signs in with an existing token, a password, or (on a new server, for scripts)
 * by creating the first user, and saves the URL and a fresh API token.
 */
export async function login(urlArgument: string | undefined, options: LoginOptions): Promise<void> {
  const urlText = urlArgument ?? process.env.DEN_URL ?? readSavedConfig()?.url;
  if (!urlText) throw new UsageError('Give the server URL, for example `den login http://127.0.0.1:7080`.');
  const url = normaliseServerUrl(urlText);
  const anonymous = new DenClient({ url });
  const tokenRequest = { name: options.tokenName, expiresInDays: options.expiresInDays };

  let token: string;
  let tokenId: string | undefined;
  let username: string;
  let created = false;
  if (options.token) {
    const me = await anonymous.withToken(options.token).me();
    token = options.token;
    username = me.username;
  } else {
    let result: LoginResult;
    if (options.firstUserUsername !== undefined || options.firstUserPassword !== undefined) {
      if (!options.firstUserUsername || !options.firstUserPassword) {
        throw new UsageError('Pass both --first-user-username and --first-user-password.');
      }
      const { setupRequired } = await anonymous.setupStatus();
      if (setupRequired) {
        result = await anonymous.createFirstUser({
          username: options.firstUserUsername,
          password: options.firstUserPassword,
          displayName: options.firstUserDisplayName,
          token: tokenRequest,
        });
        created = true;
      } else {
        // Scripts run the same line twice: on a set-up server, sign in as that user instead.
        const username = options.username ?? options.firstUserUsername;
        try {
          result = await anonymous.login({ username, password: options.password ?? options.firstUserPassword, token: tokenRequest });
        } catch (error) {
          if ((error as { code?: string }).code !== 'INVALID_CREDENTIALS') throw error;
          throw new UsageError(
            `${url} is already set up (it has users), so --first-user-* signed in as '${username}' instead, and that username or password is wrong. ` +
              `Sign in with an existing account: \`den login ${url} --username NAME\` (ask an owner of the server for one).`,
            1,
          );
        }
      }
    } else {
      const { setupRequired } = await anonymous.setupStatus();
      if (setupRequired) {
        throw new UsageError(
          `${url} has no users yet. Create the owner with \`den login ${url} --first-user-username NAME --first-user-password PASSWORD\`.`,
          1,
        );
      }
      const user = options.username ?? (await promptLine('Username: ', '--username'));
      const password = options.password ?? (await promptHidden('Password: ', '--password'));
      result = await anonymous.login({ username: user, password, token: tokenRequest });
    }
    if (!result.token) {
      throw new UsageError(`${url} signed you in but returned no API token. Check that the CLI and the server are the same version.`, 1);
    }
    token = result.token.token;
    tokenId = result.token.id;
    username = result.user.username;
  }

  const path = writeSavedConfig({ url, token, username, tokenId });
  if (options.json) {
    printJson({ url, username, createdFirstUser: created, configPath: path });
    return;
  }
  if (created) note(`Created the first user '${username}' (owner).`);
  print(`Logged in to ${url} as ${username}.`);
  if (process.env.DEN_URL || process.env.DEN_TOKEN) {
    note('Note: DEN_URL or DEN_TOKEN is set in the environment and overrides the saved login.');
  }
}

/** `den logout`: revokes the saved token on the server (best effort) and deletes the saved login. */
export async function logout(): Promise<void> {
  const saved = readSavedConfig();
  if (!saved) {
    print('You are not logged in.');
    return;
  }
  const client = new DenClient({ url: saved.url, token: saved.token });
  try {
    if (saved.tokenId) await client.revokeToken(saved.tokenId);
    else await client.logout();
  } catch (error) {
    // The login is forgotten either way; say what could not be cleaned up on the server.
    note(`Warning: could not revoke the token on ${saved.url}: ${(error as Error).message}`);
  }
  removeSavedConfig();
  print(`Logged out of ${saved.url}.`);
}

/** `den whoami` */
export async function whoami(options: { json?: boolean }): Promise<void> {
  const session = connect();
  const me = await session.client.me();
  if (options.json) {
    printJson({ url: session.client.url, ...me, csrfToken: undefined });
    return;
  }
  const config = effectiveConfig();
  print(
    renderFields([
      ['user', me.username],
      ['name', me.displayName],
      ['role', me.role],
      ['server', session.client.url],
      ['via', config.source.token === 'env' ? 'DEN_TOKEN' : 'saved login'],
    ]),
  );
}

async function promptLine(question: string, flag: string): Promise<string> {
  if (!process.stdin.isTTY) throw new UsageError(`${flag} is required when den does not run in a terminal.`);
  const { createInterface } = await import('node:readline/promises');
  const readline = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return (await readline.question(question)).trim();
  } finally {
    readline.close();
  }
}
