import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import { workspaceDownError } from '../reconcile/health.ts';
import type { Database } from '../store/schema.ts';
import { findWorkspaceFor, type WorkspaceRow } from '../workspaces/access.ts';

/** Who an SSH connection belongs to, once authenticated. */
export interface SshUser {
  userId: string;
  username: string;
  role: 'owner' | 'template-admin' | 'member';
}

/** The workspace an SSH connection reaches, or the sentence that says why it cannot. */
export type SshTarget =
  | { ok: true; workspace: WorkspaceRow & { owner_name: string } }
  | { ok: false; error: AppError };

const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/i;

/**
 * The SSH user name names the workspace: `WS` (the user's own), `OWNER/WS` or `WS.OWNER`
 * (another user's, for those allowed to see it). undefined when it is none of these.
 */
export function parseSshLogin(login: string, username: string): { owner: string; name: string } | undefined {
  const slash = login.split('/');
  if (slash.length === 2 && NAME.test(slash[0]) && NAME.test(slash[1])) return { owner: slash[0], name: slash[1] };
  const dot = login.split('.');
  if (dot.length === 2 && NAME.test(dot[0]) && NAME.test(dot[1])) return { owner: dot[1], name: dot[0] };
  if (NAME.test(login)) return { owner: username, name: login };
  return undefined;
}

/** Finds the workspace `login` names as `user` sees it; another user's workspace reads exactly like a missing one. */
export async function resolveSshTarget(db: Kysely<Database>, user: SshUser, login: string): Promise<SshTarget> {
  const ref = parseSshLogin(login, user.username);
  if (!ref) {
    return { ok: false, error: new AppError('WORKSPACE_NOT_FOUND', `'${login.slice(0, 64)}' does not name a workspace. Connect as WORKSPACE@host (or OWNER/WORKSPACE@host); run \`den list\` to see your workspaces.`) };
  }
  try {
    const workspace = await findWorkspaceFor(db, { ...user, via: 'token' }, ref.owner, ref.name);
    return { ok: true, workspace };
  } catch (error) {
    if (error instanceof AppError) return { ok: false, error };
    throw error;
  }
}

/**
 * Why a session cannot run in the workspace right now (re-read at each session: it may have
 * started or stopped since the connection opened); undefined when its agent is connected.
 */
export async function unavailableReason(db: Kysely<Database>, agents: AgentHub, workspaceId: string, label: string, name: string): Promise<AppError | undefined> {
  if (agents.isConnected(workspaceId)) return undefined;
  const row = await db.selectFrom('workspaces').select(['name', 'status', 'health', 'health_message', 'deleted_at']).where('id', '=', workspaceId).executeTakeFirst();
  if (!row || row.deleted_at !== null) return new AppError('WORKSPACE_NOT_FOUND', `Workspace '${label}' was deleted. Run \`den list\` to see your workspaces.`);
  if (row.status !== 'running' && row.status !== 'starting') {
    return new AppError('WORKSPACE_NOT_RUNNING', `Workspace '${label}' is ${row.status}. Start it with \`den start ${name}\` and connect again.`);
  }
  return workspaceDownError(row) ?? new AppError('AGENT_NOT_CONNECTED', `The agent of workspace '${label}' is not connected right now. Wait a few seconds (it reconnects by itself) and connect again.`);
}
