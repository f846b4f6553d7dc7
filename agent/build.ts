import { build } from 'esbuild';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Chunks of earlier builds are kept this long (an agent starting from an older entry may still load them). */
const OLD_CHUNK_TTL_MS = 60 * 60 * 1000;

/**
 * Bundles the agent (`npm run build:agent`) into dist/agent.mjs plus chunks in
 * dist/agent-chunks/. node-pty stays external: it is a native addon shipped next to the bundle.
 * A bundle loads several times faster than the module graph with type stripping (create ->
 * ready has a 1 s budget). The split is deliberate: the entry holds only what dialing needs
 * (ws), so the websocket handshake runs while the chunk with zod, the protocol and exec loads.
 */
export async function buildAgentBundle(root = join(dirname(fileURLToPath(import.meta.url)), '..')): Promise<string> {
  const outdir = join(root, 'dist');
  const outfile = join(outdir, 'agent.mjs');
  const result = await build({
    entryPoints: [join(root, 'agent', 'main.ts')],
    outdir,
    entryNames: 'agent',
    chunkNames: 'agent-chunks/[name]-[hash]',
    outExtension: { '.js': '.mjs' },
    splitting: true,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node24',
    minify: true,
    sourcemap: false,
    legalComments: 'none',
    // ws loads these optional native speed-ups with try/require; we do not ship them
    external: ['node-pty', 'bufferutil', 'utf-8-validate'],
    // ws is CommonJS; give its require() calls a real require in the ESM output
    banner: { js: "import { createRequire as __denCreateRequire } from 'node:module'; const require = __denCreateRequire(import.meta.url);" },
    logLevel: 'warning',
    write: false,
  });
  // Chunks first (content-hashed, so never overwritten with other content), the entry last and
  // by rename: an agent starting meanwhile, or a concurrent build, never sees half a bundle.
  const written = new Set<string>();
  for (const file of result.outputFiles) {
    written.add(file.path);
    if (file.path === outfile || existsSync(file.path)) continue;
    writeAtomically(file.path, file.contents);
  }
  const entry = result.outputFiles.find((file) => file.path === outfile);
  if (!entry) throw new Error(`esbuild produced no ${outfile}`);
  writeAtomically(outfile, entry.contents);
  pruneOldChunks(join(outdir, 'agent-chunks'), written);
  return outfile;
}

function writeAtomically(path: string, contents: Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, contents);
  renameSync(temporary, path);
}

function pruneOldChunks(dir: string, keep: Set<string>): void {
  const now = Date.now();
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (!keep.has(path) && now - statSync(path).mtimeMs > OLD_CHUNK_TTL_MS) rmSync(path, { force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const outfile = await buildAgentBundle();
  process.stdout.write(`built ${outfile}\n`);
}
