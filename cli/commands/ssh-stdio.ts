import { fetchUsername } from '../../client/exec.ts';
import { runTunnel } from '../../client/tunnel.ts';
import { requireLogin } from '../config.ts';
import { UsageError } from '../errors.ts';
import { parseWorkspaceRef } from '../refs.ts';

/**
 * `den ssh --stdio WS`, the ProxyCommand of `den ssh` and `den config-ssh`: stdin and stdout
 * joined to the workspace's SSH tunnel over den's HTTP(S) port, authenticated with the API token.
 * Every `ssh` connect pays its start-up, so it loads neither DenClient nor zod, and asks the
 * server nothing but the tunnel when the saved login knows the username.
 */
export async function sshStdio(reference: string | undefined): Promise<void> {
  if (!reference) throw new UsageError('Name the workspace, for example `den ssh --stdio demo`.');
  const config = requireLogin();
  const parsed = parseWorkspaceRef(reference);
  const owner = parsed.owner ?? config.username ?? (await fetchUsername(config.url, config.token));
  await runTunnel({
    baseUrl: config.url,
    token: config.token,
    path: `/api/v1/workspaces/${encodeURIComponent(owner)}/${encodeURIComponent(parsed.name)}/ssh`,
    input: process.stdin,
    output: process.stdout,
  });
  // stdin may still be open; it must not keep den alive after the tunnel closed
  process.stdin.destroy();
}
