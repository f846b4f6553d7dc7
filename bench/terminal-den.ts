/**
 * The `den` target of the terminal benchmark: a real den server (`node bin/den.js server`,
 * process runtime, SQLite in a temp dir) with a first user, an API token, the starter template
 * and one running workspace, so the benchmark client goes websocket -> server -> agent link ->
 * agent -> node-pty exactly like a browser.
 *
 * The shell is `bash --norc --noprofile` with PS1 'den$ ' (the reference's), asked for by the
 * `attach` message's command and env (protocol 1.1); the benchmark's data file is linked (or copied) into the workspace
 * home, which is where the sandboxed shell sees it as ~/NAME.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, linkSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { basename, join, resolve } from 'node:path';
import { DenClient } from '../client/client.ts';
import { terminalUrl } from '../client/terminal.ts';
import { readTemplateFolder } from '../cli/template-folder.ts';
import { PROMPT } from './terminal-client.ts';

const root = resolve(import.meta.dirname, '..');
const USER = 'bench';
const PASSWORD = 'bench-terminal-password';
const WORKSPACE = 'bench';
/** the benchmark's shell: the reference's bare bash with its prompt */
export const BENCH_SHELL = { command: ['bash', '--norc', '--noprofile'], env: { PS1: PROMPT } };

export interface DenTarget {
  /** the terminal websocket URL */
  url: string;
  headers: Record<string, string>;
  /** the data file's path as the workspace shell sees it */
  file: string;
  serverPid: number;
  /** the agent's node process (inside bubblewrap when sandboxed) */
  agentPid(): number | undefined;
  stop(): Promise<void>;
}

export async function startDenTarget(options: { dir: string; dataFile: string; say: (line: string) => void }): Promise<DenTarget> {
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const dataDir = join(options.dir, 'den-data');
  const child = spawn(process.execPath, [join(root, 'bin/den.js'), 'server', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--runtime', 'process', '--log-level', 'warn'], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, HOME: options.dir },
  });
  const exited = new Promise<never>((_, reject) => child.once('exit', (code, signal) => reject(new Error(`den server exited with ${code ?? signal}`))));
  exited.catch(() => undefined);
  try {
    await Promise.race([waitForServer(baseUrl), exited]);
    const anonymous = new DenClient({ url: baseUrl });
    const login = await anonymous.createFirstUser({ username: USER, password: PASSWORD, token: { name: 'terminal benchmark' } });
    const token = login.token!.token;
    const client = anonymous.withToken(token);
    await client.templates.push({ files: readTemplateFolder(join(root, 'templates/starter')), activate: true });
    const created = await client.workspaces.create({ name: WORKSPACE, template: 'starter', params: {} });
    const workspace = await waitForRunning(client, created.workspace.id);
    const home = join(dataDir, 'workspaces', workspace.id, 'home');
    placeFile(options.dataFile, join(home, basename(options.dataFile)));
    const url = terminalUrl(baseUrl, USER, WORKSPACE);
    const headers = { authorization: `Bearer ${token}` };
    options.say(`den server ${baseUrl} (pid ${child.pid}), workspace ${USER}/${WORKSPACE} running`);
    return {
      url,
      headers,
      file: `~/${basename(options.dataFile)}`,
      serverPid: child.pid!,
      agentPid: () => agentNodePid(dataDir, workspace.id),
      stop: async () => {
        await deleteWorkspace(client, dataDir, workspace.id);
        await stopServer(child);
      },
    };
  } catch (error) {
    await stopServer(child);
    throw error;
  }
}

async function waitForRunning(client: DenClient, id: string) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const workspace = await client.workspaces.get(USER, WORKSPACE);
    if (workspace.id !== id) throw new Error('The benchmark workspace changed under us.');
    if (workspace.status === 'running' && workspace.agentState === 'ready') return workspace;
    if (workspace.status === 'failed' || Date.now() > deadline) {
      throw new Error(`The benchmark workspace did not become ready: ${workspace.status}, agent ${workspace.agentState}, ${workspace.latestBuild?.error ?? ''}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Workspaces outlive the server by design: delete ours (agent, shells) before stopping it. */
async function deleteWorkspace(client: DenClient, dataDir: string, id: string): Promise<void> {
  const leader = trackedAgent(dataDir, id);
  try {
    await client.workspaces.transition(USER, WORKSPACE, 'delete');
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      const gone = await client.workspaces.get(USER, WORKSPACE).then(() => false, () => true);
      if (gone) break;
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    // whatever is left of the agent's process group (it was spawned detached: pgid = pid)
    if (leader) {
      try {
        process.kill(-leader, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

function trackedAgent(dataDir: string, workspaceId: string): number | undefined {
  try {
    return (JSON.parse(readFileSync(join(dataDir, 'workspaces', workspaceId, 'state.json'), 'utf8')) as { agent?: { pid: number } }).agent?.pid;
  } catch {
    return undefined;
  }
}

async function waitForServer(baseUrl: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${baseUrl}/api/v1/setup`)).ok) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`den server at ${baseUrl} did not answer within 30 s`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A hard link when the data dir is on the same file system (no 100 MB copy), else a copy. */
function placeFile(from: string, to: string): void {
  try {
    linkSync(from, to);
  } catch {
    copyFileSync(from, to);
  }
}

/** The agent's node process: the tracked pid is the group leader (bwrap when sandboxed), the agent one of its descendants. */
function agentNodePid(dataDir: string, workspaceId: string): number | undefined {
  const leader = trackedAgent(dataDir, workspaceId);
  const queue = leader ? [leader] : [];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    try {
      // node names its main thread 'MainThread'; the first process that is not bubblewrap is the agent
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'bwrap') return pid;
      queue.push(...readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

function stopServer(child: ChildProcess): Promise<void> {
  return new Promise((resolveStop) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolveStop();
    child.once('exit', () => resolveStop());
    child.kill('SIGTERM');
  });
}

function freePort(): Promise<number> {
  return new Promise((resolvePort) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolvePort(port));
    });
  });
}
