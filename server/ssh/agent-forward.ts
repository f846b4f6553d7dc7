import type { Kysely } from 'kysely';
import type { Connection } from 'ssh2';
import { workspaceSpec } from '../apps/apps.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import { listenInWorkspace } from '../agents/tcp-listen.ts';
import { runAgentCommand } from '../environments/agent-command.ts';
import type { Database } from '../store/schema.ts';
import { relayAcceptedConnection, type RelayDeps } from './remote-forward.ts';
import { openAuthAgentChannel } from './ssh2-internals.ts';

export interface AgentForwardDeps extends RelayDeps {
  db: Kysely<Database>;
  agents: AgentHub;
  workspaceId: string;
}

/** A client's SSH agent reachable inside the workspace for one session. */
export interface ForwardedAgent {
  /** the unix socket in the workspace (SSH_AUTH_SOCK) */
  socketPath: string;
  /** Stops listening and removes the socket and its directory. */
  close(): void;
}

/**
 * Creates a private directory (mode 0700, as OpenSSH's sshd makes /tmp/ssh-XXXX) in the workspace
 * user's runtime directory or /tmp, and prints it. A unix socket path has at most 107 bytes: a
 * runtime directory longer than 64 leaves too little room for the rest, so /tmp is taken instead.
 */
const MAKE_DIR = 'umask 077; base="${XDG_RUNTIME_DIR:-/tmp}"; [ ${#base} -le 64 ] && [ -d "$base" ] || base=/tmp; exec mktemp -d "$base/den-ssh-XXXXXXXXXX"';
const SOCKET_NAME = 'agent.sock';
/** what MAKE_DIR may print: an absolute path of a few safe characters (it is put into `rm -rf` later) */
const MADE_DIR = /^(\/[\w.-]+)+$/;
/** mktemp and rm in the workspace: a session waits for the first, so neither may hang it */
const COMMAND_TIMEOUT_MS = 10_000;

/** Whether the template version the workspace runs now allows agent forwarding (`workspace.ssh.agentForwarding`). */
export async function agentForwardingAllowed(db: Kysely<Database>, workspaceId: string): Promise<boolean> {
  const row = await db.selectFrom('workspaces').select('template_version_id').where('id', '=', workspaceId).executeTakeFirst();
  if (!row) return false;
  const spec = await workspaceSpec(db, row.template_version_id);
  return spec?.workspace?.ssh?.agentForwarding === true;
}

/**
 * Forwards the SSH client's agent into the workspace (`auth-agent-req@openssh.com`): the agent
 * listens on a unix socket in a private directory (a `listen` channel, as -R with a socket
 * path), and each connection to it becomes an `auth-agent@openssh.com` channel to the client,
 * bytes relayed both ways and counted against the connection's channel limit. Throws when the
 * directory or the listener cannot be made; `close()` removes both.
 */
export async function forwardAuthAgent(client: Connection, deps: AgentForwardDeps): Promise<ForwardedAgent> {
  const dir = await makePrivateDir(deps.agents, deps.workspaceId);
  const socketPath = `${dir}/${SOCKET_NAME}`;
  let closed = false;
  const removeDir = () => void runAgentCommand(deps.agents, deps.workspaceId, ['rm', '-rf', '--', dir], { timeoutMs: COMMAND_TIMEOUT_MS, onOutput: () => {} })
    .catch((error: unknown) => deps.log.debug({ err: error, dir }, 'SSH agent forwarding: the socket directory was not removed'));
  try {
    const listener = await listenInWorkspace(deps.agents, deps.workspaceId, { path: socketPath }, (accepted, claim) =>
      void relayAcceptedConnection(deps, accepted, claim, () => openAuthAgentChannel(client), () => closed));
    return {
      socketPath,
      close() {
        if (closed) return;
        closed = true;
        listener.close();
        removeDir();
      },
    };
  } catch (error) {
    removeDir();
    throw error;
  }
}

async function makePrivateDir(agents: AgentHub, workspaceId: string): Promise<string> {
  let output = '';
  const { exitCode } = await runAgentCommand(agents, workspaceId, ['/bin/sh', '-c', MAKE_DIR], {
    timeoutMs: COMMAND_TIMEOUT_MS,
    // a path is a line; more than this is not one MADE_DIR accepts, so it is not kept
    onOutput: (stream, chunk) => void (stream === 'stdout' && output.length <= 4096 && (output += chunk.toString('utf8'))),
  });
  const dir = output.trim();
  if (exitCode !== 0 || !MADE_DIR.test(dir)) throw new Error(`The workspace could not make a private directory for the agent socket (mktemp exited with ${exitCode ?? 'no status: it timed out'}).`);
  return dir;
}
