import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';

export interface DenResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

const ROOT = resolve(import.meta.dirname, '..', '..');

/**
 * Runs the real `node bin/den.js ...args` with pipes (no terminal) and exactly `env` as its
 * environment; killed after `timeoutMs`.
 */
export function runDen(args: string[], env: Record<string, string>, timeoutMs: number): Promise<DenResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'den.js'), ...args], { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
    child.stdin.end();
  });
}
