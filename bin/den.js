#!/usr/bin/env node
// The `den` command. `den server` starts the control plane; everything else is the CLI.
// The two never import each other (see DESIGN.md's arrows); this file only dispatches.
import { readFileSync, statSync } from 'node:fs';
import module from 'node:module';
import { homedir } from 'node:os';
import { join } from 'node:path';

const [major] = process.versions.node.split('.').map(Number);
if (major < 24) {
  process.stderr.write(`den needs Node.js 24 or newer; this is ${process.version}. Install Node 24 and try again.\n`);
  process.exit(1);
}
// V8 code cache: repeated runs skip parsing and compiling (about half of the CLI's start-up).
// In the user's cache dir rather than Node's default (the shared OS temp dir, which a reboot or
// tmp cleaner empties); NODE_COMPILE_CACHE still wins, and NODE_DISABLE_COMPILE_CACHE=1 turns it off.
module.enableCompileCache?.(process.env.NODE_COMPILE_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'den', 'compile-cache'));
const argv = process.argv.slice(2);
if (argv[0] === 'server' || (argv[0] === 'help' && argv[1] === 'server')) {
  const { runServer } = await import('../server/main.ts');
  await runServer(argv[0] === 'help' ? ['--help'] : argv.slice(1));
} else {
  const { runCli } = await loadCli();
  process.exitCode = await runCli(argv);
}

/**
 * The CLI from the esbuild bundle dist/den.mjs (see cli/bundle.ts) when it is fresh; rebuilt
 * first when it is missing or older than a source file; from the .ts sources when it cannot be
 * built (read-only install) or DEN_CLI_FROM_SOURCE=1. The freshness check is plain JS on purpose:
 * importing any .ts file loads the type stripper, which costs more than the check saves.
 */
async function loadCli() {
  if (!process.env.DEN_CLI_FROM_SOURCE) {
    const root = new URL('../', import.meta.url);
    const bundle = new URL('dist/den.mjs', root);
    try {
      if (isBundleFresh(root)) return await import(bundle.href);
      const { buildCliBundle } = await import('../cli/bundle.ts');
      await buildCliBundle();
      return await import(bundle.href);
    } catch (error) {
      if (process.env.DEN_DEBUG) process.stderr.write(`den: using the CLI sources; the bundle failed: ${error?.stack ?? error}\n`);
    }
  }
  return import('../cli/main.ts');
}

function isBundleFresh(root) {
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(new URL('dist/den.json', root), 'utf8'));
  } catch {
    return false;
  }
  for (const input of manifest.inputs) {
    let mtime;
    try {
      mtime = statSync(new URL(input, root)).mtimeMs;
    } catch {
      if (input.startsWith('node_modules')) continue;
      return false;
    }
    if (mtime > manifest.builtAt) return false;
  }
  return true;
}
