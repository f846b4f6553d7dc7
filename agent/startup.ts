import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { StartupScript } from '../protocol/agent.ts';

export type ScriptStream = 'stdout' | 'stderr' | 'system';

export interface StartupOptions {
  env: Record<string, string>;
  cwd: string;
  /** complete lines of one script's output, in order */
  onLines(script: string, stream: ScriptStream, lines: string[]): void;
}

export type StartupResult = { ok: true } | { ok: false; message: string };

/**
 * Runs the manifest's startup scripts in order. A blocking script must finish with exit code 0
 * before the next one starts; the first failure stops the sequence and is reported as a sentence
 * naming the script. Non-blocking scripts start in their turn and run in the background; their
 * failure is logged but does not keep the workspace from becoming ready.
 */
export async function runStartupScripts(scripts: readonly StartupScript[], options: StartupOptions): Promise<StartupResult> {
  for (const script of scripts) {
    if (!script.blocking) {
      void runScript(script, options).then((failure) => {
        if (failure) options.onLines(script.name, 'system', [failure]);
      });
      continue;
    }
    const failure = await runScript(script, options);
    if (failure) {
      options.onLines(script.name, 'system', [failure]);
      return { ok: false, message: failure };
    }
  }
  return { ok: true };
}

/** How long output may keep flowing after the script exited (a background child holding the pipe open must not block start-up). */
const OUTPUT_GRACE_MS = 100;
/** Between SIGTERM and SIGKILL when a script times out. */
const KILL_GRACE_MS = 2_000;

/** Runs one script; resolves with a failure sentence, or undefined on success. */
function runScript(script: StartupScript, options: StartupOptions): Promise<string | undefined> {
  return new Promise((resolve) => {
    // Not a login shell (-l): Debian's /etc/profile resets PATH and would drop the manifest's PATH.
    const child = spawn(shell(), ['-c', script.run], {
      cwd: existsSync(options.cwd) ? options.cwd : '/',
      env: options.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      // its own process group, so a timeout ends the script's children too
      detached: true,
    });
    const stdout = lineSplitter((lines) => options.onLines(script.name, 'stdout', lines));
    const stderr = lineSplitter((lines) => options.onLines(script.name, 'stderr', lines));
    child.stdout!.on('data', stdout.push);
    child.stderr!.on('data', stderr.push);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child.pid, 'SIGTERM');
      setTimeout(() => killGroup(child.pid, 'SIGKILL'), KILL_GRACE_MS).unref();
    }, script.timeoutMs);
    let settled = false;
    const settle = (failure: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stdout.end();
      stderr.end();
      resolve(failure);
    };
    child.once('error', (error) => settle(`Startup script '${script.name}' could not be started: ${error.message}.`));
    child.once('exit', (code, signal) => {
      const failure = timedOut
        ? `Startup script '${script.name}' timed out after ${script.timeoutMs} ms and was stopped.`
        : code !== 0
          ? `Startup script '${script.name}' exited with ${code === null ? `signal ${signal}` : `code ${code}`}.`
          : undefined;
      // 'close' follows once the pipes are drained; do not wait for pipes a background child keeps open
      const grace = setTimeout(() => {
        child.stdout!.destroy();
        child.stderr!.destroy();
        settle(failure);
      }, OUTPUT_GRACE_MS);
      child.once('close', () => {
        clearTimeout(grace);
        settle(failure);
      });
    });
  });
}

let shellPath: string | undefined;
function shell(): string {
  shellPath ??= existsSync('/bin/bash') ? '/bin/bash' : '/bin/sh';
  return shellPath;
}

function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

/** Longest line kept whole; longer ones are split so one log frame stays bounded. */
const MAX_LINE = 8 * 1024;

/** Splits a byte stream into lines; each push hands over the complete lines it produced. */
export function lineSplitter(emit: (lines: string[]) => void): { push: (chunk: Buffer) => void; end: () => void } {
  let partial = '';
  const decoder = new TextDecoder();
  const out = (text: string, final: boolean) => {
    const parts = (partial + text).split('\n');
    partial = final ? '' : parts.pop()!;
    const lines: string[] = [];
    for (const part of final && parts[parts.length - 1] === '' ? parts.slice(0, -1) : parts) {
      const line = part.endsWith('\r') ? part.slice(0, -1) : part;
      for (let i = 0; i < line.length || i === 0; i += MAX_LINE) lines.push(line.slice(i, i + MAX_LINE));
    }
    while (partial.length > MAX_LINE) {
      lines.push(partial.slice(0, MAX_LINE));
      partial = partial.slice(MAX_LINE);
    }
    for (let i = 0; i < lines.length; i += 1000) emit(lines.slice(i, i + 1000));
  };
  return {
    push: (chunk) => out(decoder.decode(chunk, { stream: true }), false),
    end: () => {
      const rest = decoder.decode();
      if (rest || partial) out(rest, true);
    },
  };
}
