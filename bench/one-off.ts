/**
 * `npm run bench:one-off`: what a task or test costs in a one-off container (`oneOff: true`,
 * ADR 0030) against the same command through the service's agent, and against plain
 * `docker run --rm` of the same image on the same network, side by side in one run on the real
 * Docker engine (and, with KUBECONFIG set, on the test cluster against the agent run there).
 *
 * Each run is `POST .../env/tests/NAME/run?force=1` read to its result line: the wall time a
 * `den test` client waits, server and runtime included, CLI start excluded.
 *   node bench/one-off.ts [--runs 10]
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import type { TemplateInput } from '../protocol/template.ts';
import type { RuntimeDriver } from '../server/runtimes/driver.ts';
import { ensureImagesInCluster } from '../test/cluster/kube.ts';
import { startTestServer } from '../test/support/harness.ts';
import { waitForWorkspaceReady } from '../test/support/templates.ts';
import { api, setupOwner } from '../test/support/users.ts';
import { median, numberOption, round } from './support.ts';

const RUNS = numberOption('--runs', 10);
const IMAGE = 'den/base:bookworm';
const say = (line: string) => process.stderr.write(`${line}\n`);

const template: TemplateInput = {
  name: 'bench-one-off',
  workspace: { image: IMAGE },
  environment: {
    services: { api: { image: IMAGE, command: ['sleep', 'infinity'], env: { GREETING: 'hi' }, agent: true } },
    tests: {
      agent: { service: 'api', run: 'echo "$GREETING"' },
      oneoff: { service: 'api', oneOff: true, run: 'echo "$GREETING"' },
    },
  },
};

async function measure(runtime: 'docker' | 'kubernetes', driver: () => Promise<RuntimeDriver>): Promise<Record<string, unknown>> {
  const server = await startTestServer({ listen: true, driver });
  try {
    const owner = await setupOwner(server.app);
    const client = api(server.app, owner.token);
    const pushed = await client.post('/api/v1/templates', { files: { 'template.yaml': JSON.stringify(template) }, activate: true });
    if (pushed.status !== 201) throw new Error(JSON.stringify(pushed.json));
    say(`${runtime}: starting the workspace`);
    const created = await client.post('/api/v1/workspaces', { name: 'bench', template: 'bench-one-off' });
    const workspaceId = created.json.workspace.id as string;
    await waitForWorkspaceReady(client, owner.username, 'bench', 180_000);
    const run = async (test: string): Promise<number> => {
      const started = performance.now();
      const response = await fetch(`${server.url}/api/v1/workspaces/${owner.username}/bench/env/tests/${test}/run?force=1`, {
        method: 'POST', headers: { authorization: `Bearer ${owner.token}` },
      });
      const text = await response.text();
      const elapsed = performance.now() - started;
      if (!/"type":"result".*"state":"passed"/.test(text)) throw new Error(`${test} did not pass: ${text}`);
      return elapsed;
    };
    const times: Record<string, number[]> = { agent: [], oneoff: [] };
    await run('agent'); // first runs warm caches (the image's layers, the API server's informers)
    await run('oneoff');
    for (let i = 0; i < RUNS; i++) {
      // interleaved, so load on the machine weighs on both alike
      times.agent.push(await run('agent'));
      times.oneoff.push(await run('oneoff'));
    }
    const result: Record<string, unknown> = {
      agent_run_ms: { median: round(median(times.agent)), max: round(Math.max(...times.agent)) },
      one_off_run_ms: { median: round(median(times.oneoff)), max: round(Math.max(...times.oneoff)) },
    };
    if (runtime === 'docker') {
      // the plain tool: the same image and command on the workspace's network, created, run, removed
      const plain: number[] = [];
      for (let i = 0; i < RUNS; i++) {
        const started = performance.now();
        execFileSync('docker', ['run', '--rm', '--network', `den-${workspaceId}`, '--entrypoint', 'sh', IMAGE, '-c', 'echo hi'], { stdio: 'ignore' });
        plain.push(performance.now() - started);
      }
      result.plain_docker_run_rm_ms = { median: round(median(plain)), max: round(Math.max(...plain)) };
    }
    await server.den.driver.delete({ id: workspaceId, name: 'bench', ownerId: owner.userId, ownerName: owner.username }, { signal: new AbortController().signal, log: () => {} });
    return result;
  } finally {
    await server.close();
  }
}

const results: Record<string, unknown> = { date: new Date().toISOString(), node: process.version, cpus: cpus().length, loadavg_start: loadavg(), runs: RUNS };
const docker = new Dockerode();
results.docker = await measure('docker', async () => {
  const { createDockerDriver } = await import('../server/runtimes/docker/driver.ts');
  return createDockerDriver({
    log: pino({ level: 'silent' }), docker: docker as never, agentBundleDir: join(mkdtempSync(join(tmpdir(), 'den-bench-one-off-')), 'agent'),
    stopGraceSeconds: 1, instance: `den-bench-${randomUUID().slice(0, 8)}`,
  });
});
if (process.env.KUBECONFIG) {
  results.kubernetes = await measure('kubernetes', async () => {
    await ensureImagesInCluster(IMAGE);
    const { createKubernetesDriver } = await import('../server/runtimes/kubernetes/driver.ts');
    return createKubernetesDriver({
      log: pino({ level: 'silent' }), dataDir: mkdtempSync(join(tmpdir(), 'den-bench-one-off-k8s-')), instance: `bo-${randomUUID().slice(0, 8)}`, stopGraceSeconds: 1, startTimeoutMs: 150_000,
    });
  });
} else {
  say('KUBECONFIG is not set: the kubernetes side is not measured.');
}
results.loadavg_end = loadavg();
console.log(JSON.stringify(results, null, 2));
