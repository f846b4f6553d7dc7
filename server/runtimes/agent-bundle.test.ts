import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { assembleAgentBundle } from './agent-bundle.ts';

const dir = mkdtempSync(join(tmpdir(), 'den-agent-bundle-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Every relative module a file imports, transitively, as absolute paths. */
function importsOf(entry: string, seen = new Set<string>()): Set<string> {
  if (seen.has(entry)) return seen;
  seen.add(entry);
  if (!existsSync(entry)) return seen;
  for (const match of readFileSync(entry, 'utf8').matchAll(/(?:from|import)\s*\(?\s*["'](\.\.?\/[^"']+\.m?js)["']/g)) {
    importsOf(resolve(dirname(entry), match[1]), seen);
  }
  return seen;
}

describe('the agent bundle mounted into docker workspaces', () => {
  it('holds the agent, every chunk it imports, and node-pty', () => {
    const bundle = assembleAgentBundle({ outDir: join(dir, 'agent') });
    expect(bundle.agentBuilt).toBe(true);
    const modules = [...importsOf(join(bundle.dir, 'agent.mjs'))];
    expect(modules.length).toBeGreaterThan(1);
    expect(modules.filter((path) => !existsSync(path))).toEqual([]);
    expect(existsSync(join(bundle.dir, 'node_modules', 'node-pty', 'build', 'Release', 'pty.node'))).toBe(true);
    expect(readFileSync(join(bundle.dir, 'BUNDLE'), 'utf8').trim()).toBe(bundle.hash);
  });
});
