// Enforces the import arrows of DESIGN.md: protocol imports nothing of ours; client only
// protocol; agent, cli and web only protocol and client; only server/runtimes/* import the
// dockerode or Kubernetes SDKs; protocol and client stay free of Node-only server packages.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const modules = ['protocol', 'client', 'server', 'agent', 'cli', 'web'] as const;
type Module = (typeof modules)[number];
const allowed: Record<Module, Module[]> = {
  protocol: [],
  client: ['protocol'],
  server: ['protocol', 'server'],
  agent: ['protocol', 'client'],
  cli: ['protocol', 'client'],
  web: ['protocol', 'client'],
};
const sdkOnlyInRuntimes = ['dockerode', '@kubernetes/client-node'];

const problems: string[] = [];
for (const module of modules) {
  for (const file of sourceFiles(join(root, module))) {
    const text = readFileSync(file, 'utf8');
    const from = relative(root, file);
    for (const match of text.matchAll(/(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)) {
      const spec = match[1] ?? match[2];
      if (spec.startsWith('.')) {
        const target = relative(root, resolve(dirname(file), spec)).split('/')[0] as Module;
        if (target !== module && modules.includes(target) && !allowed[module].includes(target)) {
          problems.push(`${from} imports ${spec}: ${module}/ may not import ${target}/ (DESIGN.md, "Shape of the code").`);
        }
      } else if (sdkOnlyInRuntimes.some((sdk) => spec === sdk || spec.startsWith(`${sdk}/`))) {
        if (!from.startsWith('server/runtimes/')) {
          problems.push(`${from} imports ${spec}: only server/runtimes/* may use the runtime SDKs.`);
        }
      }
    }
  }
}

if (problems.length > 0) {
  console.error(problems.join('\n'));
  console.error(`\n${problems.length} import(s) break the module arrows. Move the code or go through the allowed module.`);
  process.exit(1);
}

function* sourceFiles(dir: string): Generator<string> {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const entry of entries) {
    if (entry === 'node_modules' || entry === 'dist') continue;
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) yield* sourceFiles(path);
    else if (/\.(ts|tsx|js|mjs)$/.test(entry)) yield path;
  }
}
