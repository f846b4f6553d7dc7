// Enforces the import arrows of DESIGN.md: protocol imports nothing of ours; client only
// protocol; agent, cli and web only protocol and client; only server/runtimes/* import the
// dockerode or Kubernetes SDKs; protocol and client stay free of Node-only server packages.
// And no two files import each other, directly or around a loop (type-only imports count: a
// loop of types is still files that cannot be understood apart).
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname } from 'node:path';
import { canonical, cycleKey, findImportCycles, importSpecifiers } from './import-graph.ts';

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
// Folders outside the modules: no arrows to check, but their files must not loop either.
const alsoCycleFree = ['test', 'bench', 'bin', 'workspace-images'];

// Import cycles tolerated for now: none. A cycle may be listed here only while it is being
// untangled, and only through server/http/app.ts; the list must stay exactly what the finder
// reports, so a cycle that goes away is deleted here and cannot come back.
const allowedCycles: string[] = [];

const problems: string[] = [];
const graph = new Map<string, Set<string>>();
for (const module of modules) {
  for (const file of sourceFiles(join(root, module))) {
    const text = readFileSync(file, 'utf8');
    const from = relative(root, file);
    graph.set(from, localImports(file, text));
    for (const spec of importSpecifiers(text)) {
      if (spec.startsWith('.')) {
        const target = relative(root, resolve(dirname(file), spec));
        const targetModule = target.split('/')[0] as Module;
        if (targetModule !== module && modules.includes(targetModule) && !allowed[module].includes(targetModule)) {
          problems.push(`${from} imports ${spec}: ${module}/ may not import ${targetModule}/ (DESIGN.md, "Shape of the code").`);
        }
      } else if (sdkOnlyInRuntimes.some((sdk) => spec === sdk || spec.startsWith(`${sdk}/`))) {
        if (!from.startsWith('server/runtimes/')) {
          problems.push(`${from} imports ${spec}: only server/runtimes/* may use the runtime SDKs.`);
        }
      }
    }
  }
}

for (const folder of alsoCycleFree) {
  for (const file of sourceFiles(join(root, folder))) graph.set(relative(root, file), localImports(file, readFileSync(file, 'utf8')));
}

const allowedKeys = new Set(allowedCycles.map((cycle) => cycleKey(canonical(cycle.split(' -> ')))));
const found = new Set(findImportCycles(graph).map(cycleKey));
for (const cycle of found) {
  if (allowedKeys.has(cycle)) continue;
  problems.push(
    `${cycle}: these files import each other in a loop (type-only imports count), so none of them can be read or changed apart from the others. ` +
      'Move what they share into the lowest of them or into a new small module (DESIGN.md, "Shape of the code").',
  );
}
for (const cycle of allowedKeys) {
  if (!cycle.split(' -> ').includes('server/http/app.ts')) {
    problems.push(`${cycle}: only the cycles through server/http/app.ts may be allowed; untangle this one instead.`);
  }
  if (found.has(cycle)) continue;
  problems.push(`${cycle}: this allowed import cycle no longer exists. Delete it from allowedCycles in test/lint-arrows.ts so it cannot come back.`);
}

// The browser bundle must not pull Node in: no file the pages (web/src) reach imports `ws` or a
// node: module. client/ code they share takes its socket by injection (client/socket.ts).
const browserFiles = new Set<string>();
const toVisit = [...graph.keys()].filter((file) => file.startsWith('web/src/'));
while (toVisit.length > 0) {
  const file = toVisit.pop()!;
  if (browserFiles.has(file)) continue;
  browserFiles.add(file);
  toVisit.push(...(graph.get(file) ?? []));
}
for (const file of browserFiles) {
  for (const spec of importSpecifiers(readFileSync(join(root, file), 'utf8'))) {
    if (spec === 'ws' || spec.startsWith('node:')) {
      problems.push(`${file} imports ${spec} and is part of the browser bundle (reached from web/src): inject the socket (client/socket.ts) or keep Node-only code out of what the pages import.`);
    }
  }
}

if (problems.length > 0) {
  console.error(problems.join('\n'));
  console.error(`\n${problems.length} problem(s) with the module arrows or import cycles. Move the code or go through the allowed module.`);
  process.exit(1);
}

/** The files of ours that `file` imports, relative to the repository root. */
function localImports(file: string, text: string): Set<string> {
  const targets = importSpecifiers(text)
    .filter((spec) => spec.startsWith('.'))
    .map((spec) => relative(root, resolve(dirname(file), spec)));
  return new Set(targets.filter((target) => existsSync(join(root, target))));
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
