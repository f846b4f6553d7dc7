import { PassThrough } from 'node:stream';
import { Exec, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { AGENT_COMMAND } from '../agent-bundle.ts';
import { LABEL_SERVICE, SERVICE_AGENT_TOKEN_DIR, SERVICE_AGENT_TOKEN_FILE, SERVICE_CONTAINER } from './objects.ts';
import type { ClusterWatch } from './watch.ts';

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

/** Where an agent beside a service dials, and the variable its token goes in (what ensureServiceAgent needs besides the pod). */
export interface ServiceAgentTarget {
  agentUrl: string;
  tokenEnv: string;
}

export interface ServiceAgentKeeper {
  /** A start put the agent of `service` (its label value) into `pod`: a pod that replaces it, or its container run again, gets one too. */
  remember(workspaceId: string, namespace: string, service: string, pod: V1Pod, target: ServiceAgentTarget): void;
  /** The workspace stopped or went away: its service pods get no agent but from a start. */
  forget(namespace: string): void;
  close(): void;
}

/** how many times the service container of a pod ran again: a run that den started no agent in is a new key */
const containerRuns = (pod: V1Pod) => pod.status?.containerStatuses?.find((status) => status.name === SERVICE_CONTAINER)?.restartCount ?? 0;

/**
 * Starts the agent again in a service pod that replaced one den started it in (deleted, evicted,
 * rescheduled), or in a service container that ran again (its processes, the agent with them,
 * are gone), once the container is ready, outside any verb on the workspace (a start does it
 * itself). The pod mounts the same token Secret, so the agent connects as before; a sync into the
 * service then sends its folder again (server/sync). Kept in memory: after a den restart, a
 * start does it.
 */
export function createServiceAgentKeeper(deps: {
  kc: KubeConfig;
  watch: Pick<ClusterWatch, 'onChange' | 'pods'>;
  /** whether a verb on the workspace runs: it starts the agents itself */
  busy(workspaceId: string): boolean;
  log: { info(details: object, message: string): void; warn(details: object, message: string): void };
}): ServiceAgentKeeper {
  /** per namespace: each service's agent target, and per pod the container run den started an agent in */
  const byNamespace = new Map<string, { agents: Map<string, ServiceAgentTarget>; started: Map<string, number>; unwatch: () => void }>();

  const onPod = async (workspaceId: string, namespace: string, pod: V1Pod) => {
    const entry = byNamespace.get(namespace);
    const name = pod.metadata?.name;
    const service = pod.metadata?.labels?.[LABEL_SERVICE];
    const target = service === undefined ? undefined : entry?.agents.get(service);
    const runs = containerRuns(pod);
    if (!entry || !target || !name || entry.started.get(name) === runs || pod.metadata?.deletionTimestamp || deps.busy(workspaceId)) return;
    if (!pod.status?.containerStatuses?.find((status) => status.name === SERVICE_CONTAINER)?.ready) return;
    entry.started.set(name, runs);
    // bounded: only pods that still exist are kept
    const alive = new Set(deps.watch.pods(namespace).map((p) => p.metadata?.name));
    for (const known of entry.started.keys()) if (!alive.has(known) && known !== name) entry.started.delete(known);
    try {
      const found = await ensureServiceAgent(deps.kc, { namespace, pod: name, ...target });
      deps.log.info({ workspaceId, service, pod: name, found }, 'started the agent in a service pod whose agent went away');
    } catch (error) {
      deps.log.warn({ workspaceId, service, pod: name, err: error }, 'could not start the agent in a service pod whose agent went away; a start of the workspace does it');
    }
  };

  return {
    remember(workspaceId, namespace, service, pod, target) {
      let entry = byNamespace.get(namespace);
      if (!entry) {
        const unwatch = deps.watch.onChange(namespace, ({ pod: changed }) => { if (changed) void onPod(workspaceId, namespace, changed); });
        entry = { agents: new Map(), started: new Map(), unwatch };
        byNamespace.set(namespace, entry);
      }
      entry.agents.set(service, target);
      entry.started.set(pod.metadata!.name!, containerRuns(pod));
    },
    forget(namespace) {
      byNamespace.get(namespace)?.unwatch();
      byNamespace.delete(namespace);
    },
    close() {
      for (const namespace of [...byNamespace.keys()]) this.forget(namespace);
    },
  };
}
