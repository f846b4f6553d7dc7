import { PassThrough } from 'node:stream';
import { Exec, type KubeConfig } from '@kubernetes/client-node';
import { AGENT_COMMAND } from '../agent-bundle.ts';
import { SERVICE_AGENT_TOKEN_DIR, SERVICE_AGENT_TOKEN_FILE, SERVICE_CONTAINER } from './objects.ts';

/** How long starting an agent beside a service may take (one exec of a short Node script). */
const EXEC_TIMEOUT_MS = 30_000;
/** what the launcher's output may hold, at most (it prints one word, or an error) */
const MAX_OUTPUT = 4_096;

/**
 * Run in the service container through the pods/exec API, by the agent's own Node (from the
 * service's image or the bundle mounted read-only): when no process of the container runs the
 * agent, starts one detached (its own session, no stdio), so it outlives the exec, with the
 * container's environment plus the URL to dial and its token, read from the Secret volume. The
 * exec then ends, as `docker exec -d` does. Prints `running` or `started`.
 */
const LAUNCHER = `const fs = require('node:fs');
const { spawn } = require('node:child_process');
const [url, tokenEnv] = process.argv.slice(1);
const agent = ${JSON.stringify(AGENT_COMMAND[1])};
const runsAgent = (pid) => { try { return fs.readFileSync('/proc/' + pid + '/cmdline', 'utf8').split('\\0')[1] === agent; } catch { return false; } };
if (fs.readdirSync('/proc').some((pid) => /^\\d+$/.test(pid) && Number(pid) !== process.pid && runsAgent(pid))) {
  process.stdout.write('running');
} else {
  const token = fs.readFileSync(${JSON.stringify(`${SERVICE_AGENT_TOKEN_DIR}/${SERVICE_AGENT_TOKEN_FILE}`)}, 'utf8').trim();
  spawn(process.execPath, [agent], { detached: true, stdio: 'ignore', env: { ...process.env, DEN_AGENT_URL: url, [tokenEnv]: token } }).unref();
  process.stdout.write('started');
}`;

/**
 * Makes sure the agent runs beside a service, inside its container: started when it is not
 * running (the pod is new, or the container restarted and the agent went with it), left alone
 * when it is. Resolves with what it found; rejects with a sentence when the exec fails.
 */
export async function ensureServiceAgent(kc: KubeConfig, target: { namespace: string; pod: string; agentUrl: string; tokenEnv: string }): Promise<'running' | 'started'> {
  const { stdout, stderr, failure } = await execCollect(kc, target.namespace, target.pod, [AGENT_COMMAND[0], '-e', LAUNCHER, target.agentUrl, target.tokenEnv]);
  const said = stdout.trim();
  if (!failure && (said === 'running' || said === 'started')) return said;
  const detail = [failure, stderr.trim() || stdout.trim()].filter(Boolean).join(': ');
  throw new Error(`starting the agent inside the service's container failed (${detail || 'no output'})`);
}

/** One exec in the service container, its output kept up to MAX_OUTPUT; failure is the API server's message when the command did not succeed. */
async function execCollect(kc: KubeConfig, namespace: string, pod: string, command: string[]): Promise<{ stdout: string; stderr: string; failure?: string }> {
  let stdout = '';
  let stderr = '';
  const out = new PassThrough().on('data', (chunk: Buffer) => { if (stdout.length < MAX_OUTPUT) stdout += chunk.toString('utf8'); });
  const err = new PassThrough().on('data', (chunk: Buffer) => { if (stderr.length < MAX_OUTPUT) stderr += chunk.toString('utf8'); });
  let failure: string | undefined = 'the exec ended without a status';
  const socket = await new Exec(kc).exec(namespace, pod, SERVICE_CONTAINER, command, out, err, null, false, (status) => {
    failure = status.status === 'Success' ? undefined : status.message ?? status.reason ?? 'it failed';
  });
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      failure = `no answer after ${EXEC_TIMEOUT_MS / 1000} s`;
      socket.close();
      resolve();
    }, EXEC_TIMEOUT_MS);
    const done = () => { clearTimeout(timer); resolve(); };
    if (socket.readyState === socket.CLOSED) done();
    else socket.once('close', done);
  });
  await new Promise((resolve) => setImmediate(resolve)); // the status message comes just before the close
  return { stdout, stderr, failure };
}
