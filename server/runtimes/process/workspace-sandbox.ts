import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { agentArgv } from '../../agents/bundle.ts';
import { assembleAgentBundleOnce } from '../agent-bundle.ts';
import { AGENT_SOCKET_NAME } from './agent-sockets.ts';
import { holderAlive, startHolder } from './holder.ts';
import { ensureOwnedBy, ensureTraversable } from './ownership.ts';
import { bwrapArgs, joinArgs, nodeRuntimePaths, SANDBOX_AGENT_DIR, SANDBOX_HOME, SANDBOX_SOCKET_DIR } from './sandbox.ts';
import { readState, writeState, type WorkspacePaths, type WorkspaceState } from './state.ts';

/** den's checkout: hidden from the sandbox (only the assembled agent bundle is mounted). */
const PACKAGE_ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');

/**
 * How the process runtime runs a workspace's processes: in the workspace's sandbox (ADR 8:
 * its own user and network namespaces, bubblewrap) or, without bubblewrap, as plain processes of
 * den's user on den's network. The driver decides what runs and when; this decides how.
 */
export interface WorkspaceSandbox {
  readonly sandboxed: boolean;
  /** HOME and TMPDIR as the workspace's processes see them */
  env(paths: WorkspacePaths): { HOME: string; TMPDIR: string };
  /**
   * Where a process with working directory `workdir` (a host path in the home) is spawned
   * (`cwd`) and starts inside the sandbox (`chdir`). Sandboxed, bubblewrap creates the directory
   * as the workspace user, resolving it the way the sandbox sees it: den itself never follows a
   * symlink that workspace code planted in the home.
   */
  workdir(paths: WorkspacePaths, workdir: string): { cwd: string; chdir?: string };
  /** The argv that runs `argv` as a process of the workspace (unchanged without a sandbox). */
  wrap(argv: string[], paths: WorkspacePaths, hostname: string, extra?: { chdir?: string; mounts?: Record<string, string> }): string[];
  /** Wraps a probe command to run in the workspace's network; undefined when it shares den's. */
  probes(paths: WorkspacePaths): ((command: string[]) => string[]) | undefined;
  /**
   * Before any process of the workspace starts: the holder of its namespaces, and a home and
   * /tmp owned by `uid` (den runs as root) on a path it may traverse. Processes still running
   * outside the current holder (it exited, or an older den started them) are stopped first
   * with `stopStale`, since they would no longer share a network with the rest.
   */
  prepare(paths: WorkspacePaths, uid: number | undefined, stopStale: () => Promise<void>): Promise<void>;
  /** The agent's argv, what to mount for it, and a hash that changes with its code. */
  agent(): { argv: string[]; mounts: Record<string, string>; hash?: string };
  /** DEN_AGENT_SOCKET for the agent socket den listens on at `hostPath`. */
  agentSocket(hostPath: string): string;
  /** Why the workspace's processes cannot be counted as running, when the sandbox is the reason. */
  problem(paths: WorkspacePaths, state: WorkspaceState): string | undefined;
}

export function createWorkspaceSandbox(options: { dataDir: string; sandboxed: boolean; asRoot: boolean }): WorkspaceSandbox {
  const { dataDir, sandboxed, asRoot } = options;
  let bundle: { dir: string; hash: string } | undefined;

  function inNetwork(paths: WorkspacePaths): string[] {
    const network = readState(paths).network;
    if (!network) throw new Error('The workspace\'s network holder is not running.');
    return joinArgs({ pid: network.nsPid, asRoot });
  }

  if (!sandboxed) {
    return {
      sandboxed,
      env: (paths) => ({ HOME: paths.home, TMPDIR: paths.tmp }),
      workdir(_paths, workdir) {
        mkdirSync(workdir, { recursive: true });
        return { cwd: workdir };
      },
      wrap: (argv) => argv,
      probes: () => undefined,
      async prepare() {},
      agent: () => ({ argv: agentArgv(), mounts: {} }),
      agentSocket: (hostPath) => hostPath,
      problem: () => undefined,
    };
  }

  return {
    sandboxed,
    env: () => ({ HOME: SANDBOX_HOME, TMPDIR: '/tmp' }),

    workdir(paths, workdir) {
      const chdir = workdir.startsWith(paths.home) ? join(SANDBOX_HOME, workdir.slice(paths.home.length)) : undefined;
      return { cwd: paths.home, chdir };
    },

    wrap(argv, paths, hostname, extra = {}) {
      return [...inNetwork(paths), ...bwrapArgs({
        home: paths.home, tmp: paths.tmp, hostname, chdir: extra.chdir,
        readOnly: nodeRuntimePaths(),
        mounts: { ...extra.mounts, [paths.socketDir]: SANDBOX_SOCKET_DIR },
        hidden: [dataDir, PACKAGE_ROOT],
      }), ...argv];
    },

    probes: (paths) => (command) => [...inNetwork(paths), ...command],

    async prepare(paths, uid, stopStale) {
      if (holderAlive(readState(paths).network)) return; // prepared by an earlier start
      await stopStale();
      if (uid !== undefined) {
        // Nothing of the workspace runs now, so nothing can swap a directory for a symlink mid-walk.
        ensureTraversable(dataDir, [join(dataDir, 'workspaces'), paths.root]);
        ensureOwnedBy(paths.home, uid);
        ensureOwnedBy(paths.tmp, uid);
      }
      const network = await startHolder(paths, uid);
      writeState(paths, { ...readState(paths), network });
    },

    agent() {
      bundle ??= assembleAgentBundleOnce(join(dataDir, 'process', 'agent-bundle'), { includeNode: false });
      return { argv: [process.execPath, join(SANDBOX_AGENT_DIR, 'agent.mjs')], mounts: { [bundle.dir]: SANDBOX_AGENT_DIR }, hash: bundle.hash };
    },

    agentSocket: () => join(SANDBOX_SOCKET_DIR, AGENT_SOCKET_NAME),

    problem(paths, state) {
      if (holderAlive(state.network)) return undefined;
      return state.network
        ? `The workspace's network sandbox exited; see ${join(paths.logs, 'network.log')}. Restart the workspace.`
        : 'The workspace runs without its network sandbox (an older den started it). Restart the workspace.';
    },
  };
}
