import type { Generated } from 'kysely';

/**
 * The typed shape of den's database. Timestamps are ISO-8601 UTC strings (they sort the same
 * on SQLite and PostgreSQL); booleans are 0/1 integers; JSON is stored as text.
 */
export interface Database {
  users: UsersTable;
  sessions: SessionsTable;
  api_tokens: ApiTokensTable;
  ssh_keys: SshKeysTable;
  templates: TemplatesTable;
  template_versions: TemplateVersionsTable;
  workspaces: WorkspacesTable;
  builds: BuildsTable;
  build_logs: BuildLogsTable;
  agent_tokens: AgentTokensTable;
  agents: AgentsTable;
  workspace_events: WorkspaceEventsTable;
  leases: LeasesTable;
  ssh_host_keys: SshHostKeysTable;
  app_tokens: AppTokensTable;
  app_shares: AppSharesTable;
  app_health: AppHealthTable;
  environment_service_versions: EnvironmentServiceVersionsTable;
  environment_runs: EnvironmentRunsTable;
  environment_grants: EnvironmentGrantsTable;
  environment_group_grants: EnvironmentGroupGrantsTable;
  groups: GroupsTable;
  group_members: GroupMembersTable;
  group_events: GroupEventsTable;
  replicas: ReplicasTable;
  agent_locations: AgentLocationsTable;
  login_counters: LoginCountersTable;
  login_slots: LoginSlotsTable;
}

export type Role = 'owner' | 'template-admin' | 'member';

export interface UsersTable {
  id: string;
  username: string;
  display_name: string;
  role: Role;
  password_hash: string | null;
  suspended: number;
  created_at: string;
  updated_at: string;
}

export interface SessionsTable {
  /** sha256 of the cookie value; the cookie itself is never stored */
  id_hash: string;
  user_id: string;
  csrf_token: string;
  created_at: string;
  expires_at: string;
}

export interface ApiTokensTable {
  id: string;
  user_id: string;
  name: string;
  token_hash: string;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  revoked_at: string | null;
}

export interface SshKeysTable {
  id: string;
  user_id: string;
  name: string;
  public_key: string;
  fingerprint: string;
  created_at: string;
}

export interface TemplatesTable {
  id: string;
  name: string;
  display_name: string;
  description: string;
  icon: string | null;
  active_version_id: string | null;
  created_by: string;
  created_at: string;
  updated_at: string;
  /** set when deleted; the name is then freed (renamed) so it can be pushed again */
  deleted_at: string | null;
}

export interface TemplateVersionsTable {
  id: string;
  template_id: string;
  number: number;
  /** the validated template document as JSON */
  spec_json: string;
  /** every file of the pushed folder: JSON object path -> content */
  files_json: string;
  message: string;
  created_by: string;
  created_at: string;
}

export type WorkspaceStatus =
  | 'pending'
  | 'starting'
  | 'running'
  | 'stopping'
  | 'stopped'
  | 'deleting'
  | 'deleted'
  | 'failed';

export interface WorkspacesTable {
  id: string;
  name: string;
  owner_id: string;
  template_id: string;
  template_version_id: string;
  params_json: string;
  status: WorkspaceStatus;
  last_build_id: string | null;
  created_at: string;
  updated_at: string;
  deleted_at: string | null;
  /** what the reconciler observed after the build: null (nothing), 'ok' (recovered) or 'down' */
  health: WorkspaceHealth | null;
  /** a full sentence for the owner about `health` */
  health_message: string | null;
  health_at: string | null;
  /** when the workspace last had SSH traffic (written at most once a minute) */
  last_activity_at: string | null;
}

export type WorkspaceHealth = 'ok' | 'down';

export type BuildTransition = 'start' | 'stop' | 'delete';
export type BuildState = 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled';

export interface BuildsTable {
  id: string;
  workspace_id: string;
  number: number;
  transition: BuildTransition;
  reason: string;
  initiator_id: string;
  template_version_id: string;
  params_json: string;
  state: BuildState;
  error: string | null;
  /** JSON array of { name, startedAt, finishedAt, durationMs, state } */
  steps_json: string;
  lease_owner: string | null;
  lease_expires_at: string | null;
  attempts: number;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  /** the user who asked to cancel the build (a running build ends canceled once its worker sees it) */
  cancel_requested_by: string | null;
  cancel_requested_at: string | null;
}

export interface BuildLogsTable {
  id: Generated<number>;
  build_id: string;
  ts: string;
  /** system, stdout, stderr */
  stream: string;
  step: string | null;
  line: string;
}

export interface AgentTokensTable {
  token_hash: string;
  workspace_id: string;
  build_id: string;
  /** which agent of the workspace the token is for: 'main' or an environment service's name */
  agent_name: Generated<string>;
  /** what the agent is told on connect: startup scripts, env, apps (protocol AgentManifest) */
  manifest_json: string;
  created_at: string;
  revoked_at: string | null;
}

/** One agent of a workspace (its main agent, or one beside an environment service). */
export interface AgentsTable {
  workspace_id: string;
  /** 'main' or the environment service it runs beside */
  name: string;
  /** lifecycle state it last reported: starting, ready, start_error, shutting_down, off */
  state: string | null;
  /** digest of the manifest it was started with */
  revision: string | null;
  connected_at: string | null;
  /** when its connection closed; null while connected (or before it ever was) */
  disconnected_at: string | null;
}

export interface WorkspaceEventsTable {
  id: Generated<number>;
  workspace_id: string;
  ts: string;
  /** a stable snake_case name, e.g. agent_connection_replaced */
  kind: string;
  /** a full sentence for the owner */
  message: string;
  /** the cause, as a JSON object */
  detail_json: string;
}

/** A singleton job of the deployment (the reconcile loop), held by one replica until expires_at. */
export interface LeasesTable {
  name: string;
  owner: string;
  expires_at: string;
}

/** The SSH gateway's host key per algorithm, shared by every replica (server/ssh/host-key.ts). */
export interface SshHostKeysTable {
  algorithm: string;
  /** OpenSSH private key format, unencrypted: the gateway must present it without a person at hand */
  private_key: string;
  public_key: string;
  created_at: string;
}

/** A token of the app proxy's subdomain mode, scoped to one app host (server/apps/app-tokens.ts). */
export interface AppTokensTable {
  id_hash: string;
  /** `code`: one-time, in den's redirect to the app origin; `cookie`: that origin's cookie */
  kind: 'code' | 'cookie';
  user_id: string;
  host: string;
  created_at: string;
  expires_at: string;
}

/** An app's or port's share level as its owner set it (server/apps/shares.ts); absent: the default. */
export interface AppSharesTable {
  workspace_id: string;
  /** `port:8080` or `app:web` */
  target: string;
  level: 'owner' | 'authenticated' | 'public';
  updated_at: string;
}

/** An app's health as its checks last found it (server/apps/health.ts); absent: not checked (yet). */
export interface AppHealthTable {
  workspace_id: string;
  app: string;
  state: 'healthy' | 'unhealthy';
  /** why it is unhealthy (the last failure), null when healthy */
  message: string | null;
  since: string;
}

/** The version each environment service of a workspace was last started at (server/environments/versions.ts). */
export interface EnvironmentServiceVersionsTable {
  workspace_id: string;
  service: string;
  version: string;
  updated_at: string;
}

/** One run of an environment task or test (server/environments/runs.ts). */
export interface EnvironmentRunsTable {
  id: string;
  workspace_id: string;
  kind: 'task' | 'test';
  name: string;
  /** the entry's version when it ran (server/environments/versions.ts) */
  version: string;
  /** cancelled: the client that ran it went away and den ended it */
  state: 'running' | 'passed' | 'failed' | 'cancelled';
  exit_code: number | null;
  /** build: a start build ran a task whose version changed; user: `den env run` / `den test` */
  trigger: 'build' | 'user';
  user_id: string | null;
  build_id: string | null;
  /** the tail of stdout and stderr, bounded (runs.ts RUN_LOG_CAP_BYTES) */
  log: Generated<string>;
  /** how many bytes of output came before the kept tail */
  log_dropped_bytes: Generated<number>;
  started_at: string;
  finished_at: string | null;
}

/** A teammate who may see a workspace's environment read-only (server/environments/grants.ts). */
export interface EnvironmentGrantsTable {
  workspace_id: string;
  user_id: string;
  /** the username of who granted it */
  granted_by: string;
  created_at: string;
}

/** A group whose members may see a workspace's environment read-only (server/environments/grants.ts). */
export interface EnvironmentGroupGrantsTable {
  workspace_id: string;
  group_id: string;
  /** the username of who granted it */
  granted_by: string;
  created_at: string;
}

/** A group of users, set by den's owners (server/groups/groups.ts). */
export interface GroupsTable {
  id: string;
  name: string;
  description: Generated<string>;
  /** the username of who created it */
  created_by: string;
  created_at: string;
}

export interface GroupMembersTable {
  group_id: string;
  user_id: string;
  /** the username of who added the member */
  added_by: string;
  created_at: string;
}

/** One change to a group (created, member added or removed, deleted), kept by name after the group is gone. */
export interface GroupEventsTable {
  id: Generated<number>;
  group_name: string;
  ts: string;
  /** group.created | group.member-added | group.member-removed | group.deleted */
  kind: string;
  /** the username of who made the change */
  by: string;
  /** a full sentence */
  message: string;
}

/** A live den server process of the deployment (see server/agents/replicas.ts). */
export interface ReplicasTable {
  id: string;
  /** where other replicas reach its relay */
  url: string;
  /** sha256 (hex) of the secret it presents when it dials another replica */
  secret_hash: string;
  started_at: string;
  /** renewed by its heartbeat; past it, the replica is taken for dead */
  expires_at: string;
}

/** Which replica holds which agent's connection. */
export interface AgentLocationsTable {
  /** opaque to the store: agentKey() of the agent, "<workspace id>/<agent name>" */
  agent_key: string;
  replica_id: string;
  connected_at: string;
}

/** The login limits' counters on PostgreSQL (server/auth/login-limit-store.ts); ms since the epoch. */
export interface LoginCountersTable {
  key: string;
  count: number | string;
  resets_at: number | string;
}

export interface LoginSlotsTable {
  key: string;
  next_at: number | string;
}
