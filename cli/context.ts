import { DenClient } from '../client/client.ts';
import { requireLogin, type EffectiveConfig } from './config.ts';
import { parseWorkspaceRef, type WorkspaceRef } from './refs.ts';

/** What a command needs to talk to den: a client for the saved (or DEN_*) login and who that is. */
export interface Session {
  client: DenClient;
  config: EffectiveConfig;
  /** the signed-in username (asks the server once when the config does not know it) */
  username(): Promise<string>;
  /** `name` -> the caller's workspace, `owner/name` -> that owner's */
  workspaceRef(reference: string): Promise<WorkspaceRef>;
}

export type { WorkspaceRef } from './refs.ts';

/** A session for the current login; exit 1 with what to do when there is none. */
export function connect(): Session {
  const config = requireLogin();
  const client = new DenClient({ url: config.url, token: config.token });
  let username: Promise<string> | undefined = config.username ? Promise.resolve(config.username) : undefined;
  const session: Session = {
    client,
    config,
    username() {
      username ??= client.me().then((me) => me.username);
      return username;
    },
    async workspaceRef(reference) {
      const parsed = parseWorkspaceRef(reference);
      return { owner: parsed.owner ?? (await session.username()), name: parsed.name };
    },
  };
  return session;
}

