import { describe, expect, it } from 'vitest';
import { canonical, cycleKey, findImportCycles, importSpecifiers, type ImportGraph } from './import-graph.ts';

function graphOf(edges: Record<string, string[]>): ImportGraph {
  const graph = new Map<string, Set<string>>();
  for (const [from, to] of Object.entries(edges)) {
    graph.set(from, new Set(to));
    for (const file of to) if (!graph.has(file)) graph.set(file, new Set());
  }
  return graph;
}

const cyclesOf = (edges: Record<string, string[]>) => findImportCycles(graphOf(edges)).map(cycleKey);

describe('findImportCycles', () => {
  it('finds nothing in a graph whose arrows all point one way', () => {
    expect(cyclesOf({ 'a.ts': ['b.ts', 'c.ts'], 'b.ts': ['c.ts'], 'c.ts': [] })).toEqual([]);
  });

  it('reports two files that import each other, starting at the alphabetically first', () => {
    expect(cyclesOf({ 'session.ts': ['client.ts'], 'client.ts': ['session.ts'] })).toEqual(['client.ts -> session.ts -> client.ts']);
  });

  it('reports a file that imports itself', () => {
    expect(cyclesOf({ 'a.ts': ['a.ts'] })).toEqual(['a.ts -> a.ts']);
  });

  it('reports a loop around several files once, whichever file the search starts from', () => {
    expect(cyclesOf({ 'c.ts': ['a.ts'], 'a.ts': ['b.ts'], 'b.ts': ['c.ts'], 'd.ts': ['a.ts'] })).toEqual(['a.ts -> b.ts -> c.ts -> a.ts']);
  });

  it('reports the shortest cycle through each import on a loop, so every such import is in one', () => {
    // hub imports both a and b; each imports hub back: two cycles sharing hub
    const cycles = cyclesOf({ 'hub.ts': ['a.ts', 'b.ts'], 'a.ts': ['hub.ts'], 'b.ts': ['hub.ts'] });
    expect(cycles).toEqual(['a.ts -> hub.ts -> a.ts', 'b.ts -> hub.ts -> b.ts']);
  });

  it('reports an import that closes a second loop through an already looping file as a new cycle', () => {
    const before = cyclesOf({ 'app.ts': ['routes.ts'], 'routes.ts': ['app.ts', 'service.ts'], 'service.ts': [] });
    const after = cyclesOf({ 'app.ts': ['routes.ts'], 'routes.ts': ['app.ts', 'service.ts'], 'service.ts': ['routes.ts'] });
    expect(before).toEqual(['app.ts -> routes.ts -> app.ts']);
    expect(after).toEqual(['app.ts -> routes.ts -> app.ts', 'routes.ts -> service.ts -> routes.ts']);
  });

  it('keeps separate loops apart', () => {
    expect(cyclesOf({ 'a.ts': ['b.ts'], 'b.ts': ['a.ts', 'x.ts'], 'x.ts': ['y.ts'], 'y.ts': ['x.ts'] })).toEqual([
      'a.ts -> b.ts -> a.ts',
      'x.ts -> y.ts -> x.ts',
    ]);
  });
});

describe('canonical', () => {
  it('writes a cycle given from any file, closed or open, the same way', () => {
    expect(canonical(['b.ts', 'c.ts', 'a.ts', 'b.ts'])).toEqual(['a.ts', 'b.ts', 'c.ts']);
    expect(canonical(['c.ts', 'a.ts', 'b.ts'])).toEqual(['a.ts', 'b.ts', 'c.ts']);
  });
});

describe('importSpecifiers', () => {
  it('sees static, type-only, multi-line, re-export, dynamic and side-effect imports', () => {
    const source = [
      "import { a } from './a.ts';",
      "import type { B } from './b.ts';",
      'import {',
      '  c,',
      '  type C,',
      "} from './c.ts';",
      "export { d } from './d.ts';",
      "export * from './e.ts';",
      "const f = await import('./f.ts');",
      "import './g.ts';",
      "export const h = 'not an import';",
    ].join('\n');
    expect(importSpecifiers(source)).toEqual(['./a.ts', './b.ts', './c.ts', './d.ts', './e.ts', './f.ts', './g.ts']);
  });
});
