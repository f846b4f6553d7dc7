import { execFileSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const AGENT_BUNDLE = join(ROOT, 'dist', 'agent.mjs');
const AGENT_ENTRY = join(ROOT, 'agent', 'main.ts');
const BUILD_SCRIPT = join(ROOT, 'agent', 'build.ts');
/** esbuild bundles the agent in well under a second; beyond this something is wrong */
const BUILD_TIMEOUT_MS = 60_000;
/** What the bundle is built from: the agent and the protocol it imports (agent link, terminal, errors). */
const SOURCES = [
  { dir: join(ROOT, 'agent'), prefix: '' },
  { dir: join(ROOT, 'protocol'), prefix: '' },
];

/**
 * How a runtime starts the agent: the bundle (dist/agent.mjs) when it is newer than every agent
 * and protocol source, else the TypeScript entry point run by Node directly. A stale or missing
 * bundle is rebuilt first (`node agent/build.ts`, once per source change), because the bundle
 * starts several times faster than the module graph with type stripping and create -> ready has
 * a 1 s budget; when the build fails (read-only checkout, no esbuild) the source still works.
 */
export function agentCommand(): { command: string; args: string[] } {
  const script = freshAgentBundle() ?? AGENT_ENTRY;
  return { command: process.execPath, args: [script] };
}

/** dist/agent.mjs, rebuilt first when a source is newer; undefined when it cannot be built. */
export function freshAgentBundle(): string | undefined {
  return bundleIsFresh() || rebuildBundle() ? AGENT_BUNDLE : undefined;
}

/** agentCommand() as one argv array (for runtimes that wrap the command, e.g. in bubblewrap). */
export function agentArgv(): string[] {
  const { command, args } = agentCommand();
  return [command, ...args];
}

/** the newest source time a build failed for: do not retry until a source changes */
let failedFor: number | undefined;

function rebuildBundle(): boolean {
  const newest = Math.max(...SOURCES.map(({ dir, prefix }) => newestSource(dir, prefix)));
  if (failedFor === newest) return false;
  try {
    // a separate process: server/ may not import agent/ (the module arrows), and a sync build keeps agentCommand() sync
    execFileSync(process.execPath, [BUILD_SCRIPT], { stdio: 'ignore', timeout: BUILD_TIMEOUT_MS });
  } catch {
    failedFor = newest;
    return false;
  }
  return bundleIsFresh();
}

function bundleIsFresh(): boolean {
  let built: number;
  try {
    built = statSync(AGENT_BUNDLE).mtimeMs;
  } catch {
    return false;
  }
  return SOURCES.every(({ dir, prefix }) => newestSource(dir, prefix) <= built);
}

function newestSource(dir: string, prefix: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile() || !entry.name.startsWith(prefix) || !entry.name.endsWith('.ts') || entry.name.endsWith('.test.ts')) continue;
    newest = Math.max(newest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}
