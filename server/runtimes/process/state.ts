import { mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

/**
 * What the process runtime remembers about a workspace, on disk so that stop, delete and status
 * work after a den server restart (workspaces outlive the server; the agent reconnects itself).
 */
export interface WorkspaceState {
  /** service name -> declared port -> assigned loopback port; kept across stop/start */
  ports: Record<string, Record<string, number>>;
  agent?: TrackedProcess;
  services: Record<string, TrackedProcess>;
  /** service name -> the agent running beside that service (ServicePlan.agent) */
  serviceAgents: Record<string, TrackedProcess>;
  /** the holder of the workspace's user and network namespaces (sandboxed workspaces) */
  network?: NetworkHolder;
  /** the unprivileged uid outside the sandbox (den runs as root); kept until delete */
  uid?: number;
}

export interface NetworkHolder extends TrackedProcess {
  /** the process inside the namespaces (bwrap's child), which nsenter joins */
  nsPid: number;
}

export interface TrackedProcess {
  /** pid of the group leader (the process was spawned detached, so pgid = pid) */
  pid: number;
  /** /proc start time of the leader, to tell our process from a reused pid */
  startTime: string | null;
  /** a hash of what the process was started with; start() restarts it when this changes */
  specHash: string;
}

export interface WorkspacePaths {
  root: string;
  home: string;
  tmp: string;
  logs: string;
  /** den listens on agent.sock in here; the directory (not the file) is mounted into the sandbox */
  socketDir: string;
  stateFile: string;
}

export function workspacePaths(dataDir: string, workspaceId: string): WorkspacePaths {
  const root = join(dataDir, 'workspaces', workspaceId);
  return {
    root,
    home: join(root, 'home'),
    tmp: join(root, 'tmp'),
    logs: join(root, 'logs'),
    socketDir: join(root, 'socket'),
    stateFile: join(root, 'state.json'),
  };
}

export function readState(paths: WorkspacePaths): WorkspaceState {
  try {
    const parsed = JSON.parse(readFileSync(paths.stateFile, 'utf8')) as Partial<WorkspaceState>;
    return {
      ports: parsed.ports ?? {}, agent: parsed.agent, services: parsed.services ?? {}, serviceAgents: parsed.serviceAgents ?? {}, network: parsed.network, uid: parsed.uid,
    };
  } catch {
    return { ports: {}, services: {}, serviceAgents: {} };
  }
}

/** Writes atomically (rename) so a crash mid-write never leaves a torn state file. */
export function writeState(paths: WorkspacePaths, state: WorkspaceState): void {
  mkdirSync(paths.root, { recursive: true });
  const temp = `${paths.stateFile}.${process.pid}.tmp`;
  writeFileSync(temp, JSON.stringify(state, null, 2));
  renameSync(temp, paths.stateFile);
}

export function listStateDirs(dataDir: string): string[] {
  try {
    return readdirSync(join(dataDir, 'workspaces'), { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name);
  } catch {
    return [];
  }
}

/** Every loopback port assigned to any workspace in this data dir, so two never share one. */
export function assignedPorts(dataDir: string): Set<number> {
  const ports = new Set<number>();
  for (const id of listStateDirs(dataDir)) {
    const state = readState(workspacePaths(dataDir, id));
    for (const byPort of Object.values(state.ports)) for (const port of Object.values(byPort)) ports.add(port);
  }
  return ports;
}

/**
 * Workspace uids (outside the sandbox, when den runs as root) start here: far above login users,
 * system users and the subordinate ranges (/etc/subuid) container tools hand out from 100000,
 * and below 2^31 (Node's spawn takes an int32).
 */
export const WORKSPACE_UID_BASE = 1_900_000_000;

/** The lowest workspace uid no other workspace in this data dir holds. */
export function allocateUid(dataDir: string): number {
  const taken = new Set<number>();
  for (const id of listStateDirs(dataDir)) {
    const uid = readState(workspacePaths(dataDir, id)).uid;
    if (uid !== undefined) taken.add(uid);
  }
  let uid = WORKSPACE_UID_BASE;
  while (taken.has(uid)) uid++;
  return uid;
}

/** Asks the kernel for a free loopback port, skipping ports already assigned to a workspace. */
export async function allocatePort(taken: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const probe = createServer();
      probe.once('error', reject);
      probe.listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as { port: number };
        probe.close(() => resolve(port));
      });
    });
    if (!taken.has(port)) {
      taken.add(port);
      return port;
    }
  }
  throw new Error('Could not find a free loopback port for an environment service.');
}
