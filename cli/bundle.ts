import { mkdirSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Bundles the CLI (cli/main.ts and everything it imports: client/, protocol/, commander, zod,
 * ws) into dist/den.mjs with esbuild. From the sources, Node strips types file by file and
 * resolves ~60 modules at start; pre-built chunks (plus Node's compile cache, enabled in
 * bin/den.js) start faster, and start-up is most of `den exec ws -- true`'s budget.
 *
 * bin/den.js uses the bundle when dist/den.json says it is fresh (no input newer than it; checked
 * there in plain JS, since importing any .ts file loads the type stripper) and calls
 * `buildCliBundle()` when it is missing or stale, so a fresh checkout (`npm ci`, then
 * `npx den`) and a checkout with edited sources both work without a build step.
 * `node cli/bundle.ts` builds it by hand.
 */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const BUNDLE = join(ROOT, 'dist', 'den.mjs');
export const MANIFEST = join(ROOT, 'dist', 'den.json');

export interface BundleManifest {
  /** files whose change makes the bundle stale, relative to the package root */
  inputs: string[];
  builtAt: number;
}

/** Chunks shared by the entry and the lazily imported commands; names carry a content hash. */
export const CHUNKS = join(ROOT, 'dist', 'den-chunks');
/** Chunks no longer referenced are removed once this old: a den started before a rebuild may still load them. */
const STALE_CHUNK_MS = 10 * 60_000;

/**
 * Builds dist/den.mjs (+ dist/den-chunks/) and dist/den.json. Code splitting keeps what a
 * command does not use (zod for `den --help`, the HTTP client for `den exec`) out of its start.
 * Concurrent builders each build into their own temp folder, then rename into place: chunks
 * first (content-hashed, so identical across builders), the entry next, the manifest last.
 */
export async function buildCliBundle(): Promise<BundleManifest> {
  const esbuild = await import('esbuild');
  const startedAt = Date.now();
  const temporary = join(ROOT, 'dist', `.den-build-${process.pid}-${startedAt}`);
  mkdirSync(CHUNKS, { recursive: true });
  try {
    const result = await esbuild.build({
      absWorkingDir: ROOT,
      entryPoints: { den: join(ROOT, 'cli', 'main.ts') },
      outdir: temporary,
      chunkNames: 'den-chunks/[name]-[hash]',
      outExtension: { '.js': '.mjs' },
      bundle: true,
      splitting: true,
      platform: 'node',
      format: 'esm',
      target: 'node24',
      metafile: true,
      minifySyntax: true,
      minifyWhitespace: true,
      legalComments: 'none',
      logLevel: 'silent',
      plugins: [lazyWsTlsPlugin()],
      // Packages that use require() inside an ES module bundle need a real `require`.
      banner: { js: "import { createRequire as __denRequire } from 'node:module'; const require = __denRequire(import.meta.url);" },
    });
    const inputs = Object.keys(result.metafile.inputs)
      .map((path) => relative(ROOT, resolve(ROOT, path)))
      .filter((path) => !path.startsWith('node_modules'));
    // Dependencies change with `npm ci`/`npm install`, which rewrite this file.
    inputs.push(join('node_modules', '.package-lock.json'), 'package.json');
    const manifest: BundleManifest = { inputs, builtAt: startedAt };

    const chunks = readdirSync(join(temporary, 'den-chunks'));
    for (const chunk of chunks) renameSync(join(temporary, 'den-chunks', chunk), join(CHUNKS, chunk));
    renameSync(join(temporary, 'den.mjs'), BUNDLE);
    // The manifest goes last: a reader that sees it fresh also sees the new bundle.
    const manifestTemporary = `${MANIFEST}.${process.pid}.tmp`;
    writeFileSync(manifestTemporary, JSON.stringify(manifest));
    renameSync(manifestTemporary, MANIFEST);
    removeStaleChunks(new Set(chunks));
    return manifest;
  } finally {
    rmSync(temporary, { recursive: true, force: true });
  }
}

/**
 * ws loads node:https and node:tls when it is imported, though only a wss:// URL uses them: about
 * a fifth of `den exec`'s start-up on http://. This rewrites those two requires in
 * ws/lib/websocket.js into loads on first use (ws calls only `https.request` and `tls.connect`).
 * When a ws release changes those lines the rewrite is skipped: the bundle still works, only
 * starts slower.
 */
function lazyWsTlsPlugin(): import('esbuild').Plugin {
  const eager = ["const https = require('https');", "const tls = require('tls');"];
  return {
    name: 'den-lazy-ws-tls',
    setup(build) {
      build.onLoad({ filter: /[\\/]ws[\\/]lib[\\/]websocket\.js$/ }, (args) => {
        const source = readFileSync(args.path, 'utf8');
        if (!eager.every((line) => source.includes(line)) || /\b(https|tls)\.(?!request\b|connect\b)\w+\s*\(/.test(source)) return undefined;
        return {
          contents: source
            .replace(eager[0], 'const https = { request: (...args) => require(\'https\').request(...args) };')
            .replace(eager[1], 'const tls = { connect: (...args) => require(\'tls\').connect(...args) };'),
          loader: 'js',
        };
      });
    },
  };
}

function removeStaleChunks(current: Set<string>): void {
  for (const chunk of readdirSync(CHUNKS)) {
    const path = join(CHUNKS, chunk);
    if (!current.has(chunk) && Date.now() - statSync(path).mtimeMs > STALE_CHUNK_MS) rmSync(path, { force: true });
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const manifest = await buildCliBundle();
  process.stdout.write(`Built ${relative(process.cwd(), BUNDLE)} from ${manifest.inputs.length} inputs in ${Date.now() - manifest.builtAt} ms.\n`);
}
