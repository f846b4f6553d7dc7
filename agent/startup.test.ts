import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { startupScriptSchema, type StartupScript } from '../protocol/agent.ts';
import { lineSplitter, runStartupScripts, type ScriptStream } from './startup.ts';

const home = mkdtempSync(join(tmpdir(), 'den-startup-'));
afterAll(() => rmSync(home, { recursive: true, force: true }));

function scripts(...input: { name: string; run: string; timeoutMs?: number; blocking?: boolean }[]): StartupScript[] {
  return input.map((script) => startupScriptSchema.parse(script));
}

async function run(list: StartupScript[]) {
  const lines: string[] = [];
  const result = await runStartupScripts(list, {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, NAME: 'den' },
    cwd: home,
    onLines: (script: string, stream: ScriptStream, batch: string[]) => lines.push(...batch.map((line) => `${script}/${stream}: ${line}`)),
  });
  return { result, lines };
}

describe('startup scripts', () => {
  it('run one after another in HOME with the manifest env, output split into lines per stream', async () => {
    const { result, lines } = await run(scripts(
      { name: 'a', run: 'pwd; printf "no newline at end"' },
      { name: 'b', run: 'echo "hello $NAME"; echo oops >&2' },
    ));
    expect(result).toEqual({ ok: true });
    expect(lines).toEqual([`a/stdout: ${home}`, 'a/stdout: no newline at end', 'b/stdout: hello den', 'b/stderr: oops']);
  });

  it('stop at the first failing blocking script with a sentence naming it and its exit code', async () => {
    const { result, lines } = await run(scripts({ name: 'boom', run: 'exit 4' }, { name: 'after', run: 'echo after' }));
    expect(result).toEqual({ ok: false, message: "Startup script 'boom' exited with code 4." });
    expect(lines).toEqual(["boom/system: Startup script 'boom' exited with code 4."]);
  });

  it('stop a script (and its children) that runs past its timeout', async () => {
    const { result } = await run(scripts({ name: 'slow', run: 'sleep 30 & wait', timeoutMs: 200 }));
    expect(result).toEqual({ ok: false, message: "Startup script 'slow' timed out after 200 ms and was stopped." });
  });

  it('do not wait for a non-blocking script, and do not fail on it', async () => {
    const { result } = await run(scripts({ name: 'daemon', run: 'exit 9', blocking: false }, { name: 'next', run: 'true' }));
    expect(result).toEqual({ ok: true });
  });

  it('do not hang when a script leaves a background process holding its output open', async () => {
    const { result, lines } = await run(scripts({ name: 'bg', run: 'echo started; sleep 3 &' }));
    expect(result).toEqual({ ok: true });
    expect(lines).toContain('bg/stdout: started');
  });
});

describe('lineSplitter', () => {
  it('joins lines split across chunks, strips CR and splits multi-byte characters safely', () => {
    const out: string[] = [];
    const splitter = lineSplitter((lines) => out.push(...lines));
    const text = Buffer.from('one\r\ntw€o\nthr');
    splitter.push(text.subarray(0, 7));
    splitter.push(text.subarray(7));
    splitter.push(Buffer.from('ee'));
    expect(out).toEqual(['one', 'tw€o']);
    splitter.end();
    expect(out).toEqual(['one', 'tw€o', 'three']);
  });

  it('splits an endless line into bounded pieces', () => {
    const out: string[] = [];
    const splitter = lineSplitter((lines) => out.push(...lines));
    splitter.push(Buffer.alloc(20_000, 'x'));
    splitter.end();
    expect(out.join('')).toHaveLength(20_000);
    expect(Math.max(...out.map((line) => line.length))).toBeLessThanOrEqual(8 * 1024);
  });
});
