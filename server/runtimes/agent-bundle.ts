import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { freshAgentBundle } from '../agents/bundle.ts';
import { fileURLToPath } from 'node:url';

/**
 * The agent bundle: everything the den agent needs to run in any glibc Linux container without
 * curl or a package manager. The same layout is baked into den's images (workspace-images/) and
 * mounted read-only into other images by the docker driver, so one command starts both. The
 * process runtime mounts it (without the Node binary: the host's runtime is bound instead) into
 * its sandbox, so workspaces see the agent and not den's checkout:
 *
 *   /opt/den/agent/node                        Node 24 binary (glibc-linked, from npm `node@24`)
 *   /opt/den/agent/agent.mjs                   the esbuild bundle of agent/ (dist/agent.mjs)
 *   /opt/den/agent/agent-chunks/*.mjs          the chunks it imports (esbuild code splitting)
 *   /opt/den/agent/node_modules/node-pty/      node-pty's JavaScript and its built addon
 *   /opt/den/agent/BUNDLE                      content hash of the above
 */
export const AGENT_MOUNT_PATH = '/opt/den/agent';
export const AGENT_COMMAND = [`${AGENT_MOUNT_PATH}/node`, `${AGENT_MOUNT_PATH}/agent.mjs`];

/**
 * den's workspace images that carry the agent bundle at AGENT_MOUNT_PATH (the tags
 * workspace-images/build.ts builds with `agent: true`). The planner delivers the agent by image
 * only to these; a runtime may still find the image's bundle older than its own and mount its own.
 */
const AGENT_IMAGES = new Set(['den/base:bookworm', 'den/node:24']);

export function carriesAgent(image: string): boolean {
  return AGENT_IMAGES.has(image);
}

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface AgentBundle {
  dir: string;
  /** sha256 (hex) over every file of the bundle; names volumes and image labels */
  hash: string;
  /** false when agent/ has not been built: the bundle then holds a stub that explains it */
  agentBuilt: boolean;
}

export interface AssembleOptions {
  /** where to write the bundle (replaced if its content differs) */
  outDir: string;
  repoRoot?: string;
  /** a Node 24 binary; defaults to the one running this process */
  nodeBinary?: string;
  /** copy the Node binary in (default true; the process runtime binds the host's instead) */
  includeNode?: boolean;
  /** run agent/build.ts first when dist/agent.mjs is missing (default true) */
  buildAgent?: boolean;
}

/** Writes the bundle into outDir and returns its content hash. Idempotent. */
export function assembleAgentBundle(options: AssembleOptions): AgentBundle {
  const repoRoot = options.repoRoot ?? REPO_ROOT;
  const nodeBinary = options.nodeBinary ?? process.execPath;
  const includeNode = options.includeNode ?? true;
  if (includeNode) checkNodeBinary(nodeBinary);
  const agentFile = findAgentBundle(repoRoot, options.buildAgent ?? true);
  const ptyDir = join(repoRoot, 'node_modules', 'node-pty');
  const ptyAddon = join(ptyDir, 'build', 'Release', 'pty.node');
  if (!existsSync(ptyAddon)) {
    throw new Error(`node-pty's addon is missing at ${ptyAddon}. Run \`npm rebuild node-pty\` with Node 24 first.`);
  }

  rmSync(options.outDir, { recursive: true, force: true });
  mkdirSync(join(options.outDir, 'node_modules'), { recursive: true });
  if (includeNode) cpSync(nodeBinary, join(options.outDir, 'node'));
  if (agentFile) copyWithImports(agentFile, join(options.outDir, 'agent.mjs'));
  else writeFileSync(join(options.outDir, 'agent.mjs'), AGENT_STUB);
  const ptyOut = join(options.outDir, 'node_modules', 'node-pty');
  cpSync(join(ptyDir, 'package.json'), join(ptyOut, 'package.json'));
  cpSync(join(ptyDir, 'lib'), join(ptyOut, 'lib'), {
    recursive: true,
    filter: (source) => !/\.(test\.js|map)$/.test(source) && !/windows|conpty/i.test(source),
  });
  cpSync(ptyAddon, join(ptyOut, 'build', 'Release', 'pty.node'));

  const hash = hashTree(options.outDir);
  writeFileSync(join(options.outDir, 'BUNDLE'), `${hash}\n`);
  return { dir: options.outDir, hash, agentBuilt: agentFile !== undefined };
}

/**
 * The bundle in `parentDir/<hash>`, assembled unless that folder exists. A folder is never
 * rewritten, so a workspace that mounted an older bundle keeps its files while a newer one lands.
 */
export function assembleAgentBundleOnce(parentDir: string, options: Omit<AssembleOptions, 'outDir'> = {}): AgentBundle {
  mkdirSync(parentDir, { recursive: true });
  const scratch = join(parentDir, `.assembling-${process.pid}-${Date.now()}`);
  const bundle = assembleAgentBundle({ ...options, outDir: scratch });
  const dir = join(parentDir, bundle.hash);
  if (existsSync(dir)) rmSync(scratch, { recursive: true, force: true });
  else renameSync(scratch, dir);
  return { ...bundle, dir };
}

/** sha256 over relative paths, modes and contents of every file under dir, in sorted order. */
export function hashTree(dir: string, hash = createHash('sha256')): string {
  for (const file of listFiles(dir)) {
    const path = join(dir, file);
    hash.update(`${file}\0${statSync(path).mode & 0o111 ? 'x' : '-'}\0`);
    hash.update(readFileSync(path));
    hash.update('\0');
  }
  return hash.digest('hex');
}

export function listFiles(dir: string): string[] {
  const files: string[] = [];
  const walk = (current: string): void => {
    for (const entry of readdirSync(current, { withFileTypes: true })) {
      const path = join(current, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name !== 'BUNDLE') files.push(relative(dir, path));
    }
  };
  walk(dir);
  return files.sort();
}

/**
 * Copies an ES module and, transitively, the relative modules it imports (the entry's chunks,
 * e.g. ./agent-chunks/link-<hash>.mjs) to the same relative places. Only what the entry
 * reaches: dist/agent-chunks also keeps older builds' chunks for a while.
 */
function copyWithImports(entry: string, target: string): void {
  const pending: [string, string][] = [[entry, target]];
  const seen = new Set<string>();
  while (pending.length > 0) {
    const [from, to] = pending.pop()!;
    if (seen.has(from)) continue;
    seen.add(from);
    mkdirSync(dirname(to), { recursive: true });
    cpSync(from, to);
    const source = readFileSync(from, 'utf8');
    for (const match of source.matchAll(/(?:from|import)\s*\(?\s*["'](\.\.?\/[^"']+\.m?js)["']/g)) {
      pending.push([resolve(dirname(from), match[1]), resolve(dirname(to), match[1])]);
    }
  }
}

function findAgentBundle(repoRoot: string, buildAgent: boolean): string | undefined {
  const explicit = process.env.DEN_AGENT_BUNDLE;
  if (explicit) {
    if (!existsSync(explicit)) throw new Error(`DEN_AGENT_BUNDLE points at ${explicit}, which does not exist.`);
    return explicit;
  }
  const bundled = join(repoRoot, 'dist', 'agent.mjs');
  // this checkout's bundle, rebuilt when an agent or protocol source changed since (as the process runtime does)
  if (buildAgent && repoRoot === REPO_ROOT) return freshAgentBundle() ?? (existsSync(bundled) ? bundled : undefined);
  // The hook for the agent's own build: agent/build.ts writes dist/agent.mjs (npm run build:agent).
  if (!existsSync(bundled) && buildAgent && existsSync(join(repoRoot, 'agent', 'build.ts'))) {
    const result = spawnSync(process.execPath, [join(repoRoot, 'agent', 'build.ts')], {
      cwd: repoRoot,
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    if (result.status !== 0) throw new Error('agent/build.ts failed; fix the agent build and run this again.');
  }
  return existsSync(bundled) ? bundled : undefined;
}

function checkNodeBinary(path: string): void {
  const result = spawnSync(path, ['-p', 'process.versions.node'], { encoding: 'utf8' });
  const major = Number(result.stdout?.trim().split('.')[0]);
  if (result.status !== 0 || major !== 24) {
    throw new Error(`${path} is not a Node 24 binary. Run with Node 24 (npm install -g --prefix DIR node@24).`);
  }
}

// Written when agent/ has not been built, so a container says why it stops instead of crashing.
const AGENT_STUB = `console.error('den: this agent bundle was assembled before the agent was built; run \`npm run build:agent\` and rebuild it.');
process.exit(78);
`;
