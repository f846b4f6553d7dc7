// The import graph of den's sources, for the module-arrow lint (test/lint-arrows.ts).
//
// Cycles: a graph's cycles can be exponentially many, so findImportCycles reports a finite,
// stable set that still catches every new loop: for each import that lies on some cycle, the
// shortest cycle through that import. An import that closes a new loop therefore always shows up
// in a cycle no allow-list has seen, because that import is in it.

/**
 * The modules a file names in its imports and re-exports: static (type-only included), dynamic
 * `import('...')` and side-effect `import '...'`. A regular expression rather than a parser
 * (the typescript package den uses ships no parser API): text in a comment that reads like an
 * import counts as one, which errs on the side of reporting.
 */
export function importSpecifiers(source: string): string[] {
  const pattern = /(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|^import\s+['"]([^'"]+)['"]/gm;
  return [...source.matchAll(pattern)].map((match) => match[1] ?? match[2] ?? match[3]);
}

/** file -> the files it imports (type-only imports included). */
export type ImportGraph = ReadonlyMap<string, ReadonlySet<string>>;

/** A cycle as the files along it, starting at its alphabetically first file, not repeating it. */
export type ImportCycle = readonly string[];

export function findImportCycles(graph: ImportGraph): ImportCycle[] {
  const found = new Map<string, ImportCycle>();
  for (const component of stronglyConnectedComponents(graph)) {
    for (const from of [...component].sort()) {
      for (const to of [...(graph.get(from) ?? [])].sort()) {
        if (!component.has(to)) continue;
        // The path runs to ... from; dropping its last file leaves the cycle from -> to -> ...
        const path = to === from ? [] : shortestPath(graph, component, to, from).slice(0, -1);
        const cycle = canonical([from, ...path]);
        found.set(cycleKey(cycle), cycle);
      }
    }
  }
  return [...found.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, cycle]) => cycle);
}

/** `a.ts -> b.ts -> a.ts`: the cycle as one line, first file repeated to close it. */
export function cycleKey(cycle: ImportCycle): string {
  return [...cycle, cycle[0]].join(' -> ');
}

/** The same cycle written from another file or as a closed path compares equal after this. */
export function canonical(cycle: ImportCycle): ImportCycle {
  const open = cycle.length > 1 && cycle[0] === cycle.at(-1) ? cycle.slice(0, -1) : [...cycle];
  let first = 0;
  for (let i = 1; i < open.length; i++) if (open[i] < open[first]) first = i;
  return [...open.slice(first), ...open.slice(0, first)];
}

// Tarjan's algorithm; a file that imports itself is a component of its own with a cycle.
function stronglyConnectedComponents(graph: ImportGraph): Set<string>[] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: Set<string>[] = [];
  const visit = (file: string): void => {
    index.set(file, index.size);
    low.set(file, index.get(file)!);
    stack.push(file);
    onStack.add(file);
    for (const next of graph.get(file) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(file, Math.min(low.get(file)!, low.get(next)!));
      } else if (onStack.has(next)) {
        low.set(file, Math.min(low.get(file)!, index.get(next)!));
      }
    }
    if (low.get(file) !== index.get(file)) return;
    const component = new Set<string>();
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.add(member);
    } while (member !== file);
    if (component.size > 1 || graph.get(file)?.has(file)) components.push(component);
  };
  for (const file of [...graph.keys()].sort()) if (!index.has(file)) visit(file);
  return components;
}

// Breadth-first inside one component, neighbours in name order, so the same graph always
// yields the same path. `to` is reachable from `from` because both are in the component.
function shortestPath(graph: ImportGraph, component: ReadonlySet<string>, from: string, to: string): string[] {
  const previous = new Map<string, string | null>([[from, null]]);
  const queue = [from];
  for (let head = 0; head < queue.length && !previous.has(to); head++) {
    for (const next of [...(graph.get(queue[head]) ?? [])].sort()) {
      if (!component.has(next) || previous.has(next)) continue;
      previous.set(next, queue[head]);
      queue.push(next);
    }
  }
  const path: string[] = [];
  for (let file: string | null | undefined = to; file; file = previous.get(file)) path.unshift(file);
  return path;
}
