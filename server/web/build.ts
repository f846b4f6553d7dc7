import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { brotliCompress, constants as zlib, gzip } from 'node:zlib';
import { AppError } from '../../protocol/errors.ts';

/**
 * The browser pages (web/: the dashboard and the terminal page) built with Vite when the server
 * starts and the last build is missing or older than a source, so `npm ci && npm start` works on
 * a fresh clone without a separate build step (`npm run build:web` does it ahead of time).
 *
 * Layout (under dist/, or the data dir when the checkout is read-only):
 *   web/<build id>/index.html, web/<build id>/assets/*  one folder per build, never rewritten
 *   web.json                                            the current build: id, inputs, time
 * Asset URLs carry the build id (/web/<id>/assets/...), so a page keeps loading from its own build
 * while another process rebuilds; concurrent builders each build into a temp folder and rename it
 * into place, the manifest last (the same scheme as cli/bundle.ts).
 */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const WEB_SOURCES = join(ROOT, 'web');
/** where the pages are served from; the assets' URLs start with it */
export const WEB_URL_PREFIX = '/web/';
/** Builds that are no longer current are removed once this old: a tab opened before a rebuild may still load chunks. */
const STALE_BUILD_MS = 60 * 60_000;
/** Text assets get .br/.gz siblings, which @fastify/static serves to browsers that accept them. */
const COMPRESSIBLE = /\.(js|css|html|svg|json|map)$/;

export interface WebBuild {
  /** the build's folder name */
  id: string;
  /** absolute folder with index.html and assets/ */
  dir: string;
}

interface WebManifest {
  id: string;
  /** files whose change makes the build stale, relative to the package root */
  inputs: string[];
  builtAt: number;
}

export interface WebBuilder {
  /** the folder all builds live in (the /web/ route serves from it) */
  readonly buildsDir: string;
  /** the current build, built first when missing or older than a source */
  current(): Promise<WebBuild>;
}

/**
 * A builder writing under `<package>/dist`, or under `fallbackDir` when dist/ is not writable
 * (a read-only install). One build at a time per process; each call re-checks freshness, which
 * costs a stat of the ~100 inputs.
 */
export function createWebBuilder(options: { fallbackDir: string; log?: { info(message: string): void } }): WebBuilder {
  const dist = join(ROOT, 'dist');
  // A read-only install that ships its pages (the server image run as a non-root user, or with a
  // read-only root filesystem) serves them as they are: they cannot be rebuilt there.
  const writable = writableDir(dist);
  const shipped = writable ? undefined : lastBuild(join(dist, 'web'), join(dist, 'web.json'));
  const base = writable ?? (shipped ? dist : options.fallbackDir);
  const buildsDir = join(base, 'web');
  const manifestPath = join(base, 'web.json');
  mkdirSync(buildsDir, { recursive: true });
  let building: Promise<WebBuild> | undefined;
  return {
    buildsDir,
    async current() {
      if (shipped) return { id: shipped.id, dir: shipped.dir };
      const fresh = freshBuild(buildsDir, manifestPath);
      if (fresh) return fresh;
      building ??= buildWeb(buildsDir, manifestPath, options.log).finally(() => (building = undefined));
      return building;
    },
  };
}

function writableDir(dir: string): string | undefined {
  try {
    mkdirSync(dir, { recursive: true });
    accessSync(dir, constants.W_OK);
    return dir;
  } catch {
    return undefined;
  }
}

/** The build the manifest names, if its pages are there, with the manifest (fresh or not). */
function lastBuild(buildsDir: string, manifestPath: string): (WebBuild & { manifest: WebManifest }) | undefined {
  let manifest: WebManifest;
  try {
    manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as WebManifest;
  } catch {
    return undefined;
  }
  const dir = join(buildsDir, manifest.id);
  if (!existsSync(join(dir, 'index.html')) || !existsSync(join(dir, 'terminal.html'))) return undefined;
  return { id: manifest.id, dir, manifest };
}

function freshBuild(buildsDir: string, manifestPath: string): WebBuild | undefined {
  const last = lastBuild(buildsDir, manifestPath);
  if (!last) return undefined;
  const { manifest, dir } = last;
  for (const input of manifest.inputs) {
    let mtime: number;
    try {
      mtime = statSync(join(ROOT, input)).mtimeMs;
    } catch {
      return undefined;
    }
    if (mtime > manifest.builtAt) return undefined;
  }
  return { id: manifest.id, dir };
}

async function buildWeb(buildsDir: string, manifestPath: string, log?: { info(message: string): void }): Promise<WebBuild> {
  const vite = await importVite();
  if (!vite) {
    // A production install (npm ci --omit=dev, the server image) ships the pages built: use
    // them even when an input looks newer (npm ci rewrote node_modules/.package-lock.json).
    const last = lastBuild(buildsDir, manifestPath);
    if (last) return { id: last.id, dir: last.dir };
    throw new AppError(
      'WEB_BUILD_FAILED',
      'The web pages are not built and Vite is not installed to build them. Run `npm ci` with the dev dependencies (without --omit=dev), or `npm run build:web` where they are, and reload.',
    );
  }
  // Vite and the React plugin build for production only when NODE_ENV says so (or is unset);
  // vitest sets 'test', which would bundle React's development build (60 KB more, slower).
  const nodeEnv = process.env.NODE_ENV;
  process.env.NODE_ENV = 'production';
  const startedAt = Date.now();
  const id = `${startedAt.toString(36)}-${process.pid}`;
  const temporary = join(dirname(buildsDir), `.web-build-${id}`);
  try {
    const result = await vite.build({
      configFile: join(WEB_SOURCES, 'vite.config.ts'),
      root: WEB_SOURCES,
      base: `${WEB_URL_PREFIX}${id}/`,
      logLevel: 'warn',
      mode: 'production',
      build: {
        outDir: temporary,
        emptyOutDir: true,
        // xterm.js and its WebGL renderer are most of the ~600 kB of the terminal's chunk
        chunkSizeWarningLimit: 1024,
      },
    });
    await precompress(temporary);
    const manifest: WebManifest = { id, inputs: inputsOf(result), builtAt: startedAt };
    mkdirSync(buildsDir, { recursive: true });
    renameSync(temporary, join(buildsDir, id));
    // The manifest goes last: a reader that sees it also finds the folder it names.
    const manifestTemporary = `${manifestPath}.${process.pid}.tmp`;
    writeFileSync(manifestTemporary, JSON.stringify(manifest));
    renameSync(manifestTemporary, manifestPath);
    removeStale(buildsDir, (entry) => entry !== id);
    // temporaries of builds whose process was killed before its `finally` ran
    removeStale(dirname(buildsDir), (entry) => entry.startsWith('.web-build-'));
    log?.info(`Built the web pages in ${Date.now() - startedAt} ms (${join(buildsDir, id)}).`);
    return { id, dir: join(buildsDir, id) };
  } catch (error) {
    if (error instanceof AppError) throw error;
    throw new AppError('WEB_BUILD_FAILED', `Building the web pages from web/ failed: ${(error as Error).message} Fix the error (or run \`npm ci\` again) and reload.`, { cause: error });
  } finally {
    if (nodeEnv === undefined) delete process.env.NODE_ENV;
    else process.env.NODE_ENV = nodeEnv;
    rmSync(temporary, { recursive: true, force: true });
  }
}

/** Vite, or undefined when it is not installed (a production install). */
async function importVite(): Promise<typeof import('vite') | undefined> {
  try {
    return await import('vite');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') return undefined;
    throw error;
  }
}

/** Source files of the build (from the bundler's module graph) plus what changes with `npm ci` or a build-option edit. */
function inputsOf(result: unknown): string[] {
  const outputs = [result].flat() as { output?: { type: string; moduleIds?: string[] }[] }[];
  const inputs = new Set<string>();
  for (const output of outputs) {
    for (const chunk of output.output ?? []) {
      for (const id of chunk.moduleIds ?? []) {
        const path = id.split('?')[0];
        if (!path.startsWith(ROOT) || path.includes('\0')) continue;
        const relativePath = relative(ROOT, path);
        // dependencies change together with this file, which `npm ci`/`npm install` rewrite
        if (!relativePath.startsWith('node_modules')) inputs.add(relativePath);
      }
    }
  }
  for (const extra of ['web/index.html', 'web/terminal.html', 'web/vite.config.ts', 'server/web/build.ts', 'package.json', 'node_modules/.package-lock.json']) {
    inputs.add(extra);
  }
  return [...inputs].filter((input) => existsSync(join(ROOT, input)));
}

const brotli = promisify(brotliCompress);
const gzipAsync = promisify(gzip);

async function precompress(dir: string): Promise<void> {
  const files = (readdirSync(dir, { recursive: true }) as string[]).filter((file) => COMPRESSIBLE.test(file));
  await Promise.all(files.map(async (file) => {
    const path = join(dir, file);
    const content = await readFile(path);
    // brotli quality 9: within a few % of 11 for these files at a fraction of the CPU
    await writeFile(`${path}.br`, await brotli(content, { params: { [zlib.BROTLI_PARAM_QUALITY]: 9 } }));
    await writeFile(`${path}.gz`, await gzipAsync(content, { level: 9 }));
  }));
}

/** Entries of `dir` that `matches` picks and nobody has touched for STALE_BUILD_MS (a build takes seconds). */
function removeStale(dir: string, matches: (entry: string) => boolean): void {
  for (const entry of readdirSync(dir)) {
    if (!matches(entry)) continue;
    const path = join(dir, entry);
    try {
      if (Date.now() - statSync(path).mtimeMs > STALE_BUILD_MS) rmSync(path, { recursive: true, force: true });
    } catch {
      // another process removed it first
    }
  }
}

// `npm run build:web`: build ahead of time (the server would build on start otherwise).
if (import.meta.main) {
  const build = await createWebBuilder({ fallbackDir: join(ROOT, '.den'), log: console }).current();
  console.log(`The web pages are built in ${build.dir}.`);
}
