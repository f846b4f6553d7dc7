import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { TemplateInput } from '../protocol/template.ts';
import type { RuntimeDriver } from '../server/runtimes/driver.ts';
import type { Config } from '../server/config.ts';
import { openTerminal } from '../client/terminal.ts';
import { importImages, kubeMissingInCI, kubeSkipReason, testImage } from './cluster/kube.ts';
import { runDen, type DenResult } from './support/den-cli.ts';
import { dockerSkipReason } from './support/docker.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { waitForWorkspaceReady } from './support/templates.ts';
import { api, setupOwner, type Api, type TestUser } from './support/users.ts';

/**
 * Two agents in one workspace, against the real server, runtime and agents: the workspace's own
 * and one beside an environment service (`agent: true`). Each connects with its own token,
 * `den exec` reaches each (`--service`), one agent's token cannot connect as the other, killing
 * the service's agent is an event naming it, and a deleted workspace's tokens stop working.
 */
const READY_TIMEOUT_MS = 60_000;
const EVENT_TIMEOUT_MS = 10_000;
const CLI_TIMEOUT_MS = 30_000;

const run = promisify(execFile);
const docker = new Dockerode();
const DOCKER_IMAGE = 'den/base:bookworm';
/** an image without den's agent: the service's agent comes from the read-only bundle volume */
const PLAIN_IMAGE = 'den/base-os:bookworm';
const dockerSkip = await dockerSkipReason(docker, [DOCKER_IMAGE, PLAIN_IMAGE]);
if (dockerSkip) console.warn(`[skip] service agents on the docker runtime: ${dockerSkip}.`);

const BARE_IMAGE = 'den/base-rootfs:bookworm';
const kubeSkip = kubeSkipReason ?? dockerSkip;
if (kubeMissingInCI) throw new Error('CI must run the service agents test on kubernetes: KUBECONFIG is not set (.ci/run starts the test cluster).');
if (kubeSkipReason) console.warn(`[skip] service agents on the kubernetes runtime: ${kubeSkipReason}`);

/** den's images the kubernetes case runs, imported into the cluster's containerd unless it has them. */
async function ensureClusterImages(): Promise<void> {
  const { stdout } = await run('bash', [join(import.meta.dirname, 'cluster/import-image.sh'), '--list']);
  const present = new Set(stdout.split('\n').map((line) => line.trim()));
  const missing = [DOCKER_IMAGE, BARE_IMAGE].filter((image) => !present.has(`docker.io/${image}`) && !present.has(image));
  if (missing.length > 0) await importImages(...missing);
}

function template(name: string, workspaceImage: string, serviceImage: string): TemplateInput {
  return {
    name,
    workspace: { image: workspaceImage },
    environment: {
      services: {
        api: {
          image: serviceImage,
          command: ['sleep', '100000'],
          env: { ROLE: 'the api service' },
          agent: true,
        },
      },
    },
  };
}

interface Runtime {
  name: string;
  skip?: string;
  driver?: (config: Config) => Promise<RuntimeDriver>;
  template: TemplateInput;
  /** host pids of the main agent and of the api service's agent (den is root here, so their environment is readable) */
  agentPids(server: TestServer, workspaceId: string): Promise<{ main: number; api: number }>;
}

const runtimes: Runtime[] = [
  {
    name: 'process',
    template: template('two-agents', 'den/base:latest', 'den/base:latest'),
    async agentPids(server, workspaceId) {
      const state = JSON.parse(readFileSync(join(server.dataDir, 'workspaces', workspaceId, 'state.json'), 'utf8'));
      return { main: state.agent.pid, api: state.serviceAgents.api.pid };
    },
  },
  {
    name: 'docker',
    skip: dockerSkip,
    template: template('two-agents-docker', DOCKER_IMAGE, PLAIN_IMAGE),
    async agentPids(_server, workspaceId) {
      const pidIn = async (kind: string) => {
        const [container] = await docker.listContainers({ filters: JSON.stringify({ label: [`den.workspace.id=${workspaceId}`, `den.kind=${kind}`] }) });
        const top = await docker.getContainer(container.Id).top({ ps_args: '-eo pid,args' }) as { Processes: string[][] };
        return Number(top.Processes.find((row) => row.join(' ').includes('/opt/den/agent/agent.mjs'))![0]);
      };
      return { main: await pidIn('workspace'), api: await pidIn('service') };
    },
    driver: async (config) => {
      const { createDockerDriver } = await import('../server/runtimes/docker/driver.ts');
      return createDockerDriver({
        log: pino({ level: 'silent' }), docker: docker as never, agentBundleDir: join(mkdtempSync(join(tmpdir(), 'den-service-agents-')), 'agent'),
        stopGraceSeconds: 2, instance: `den-test-${randomUUID().slice(0, 8)}`,
      });
    },
  },
  {
    name: 'kubernetes',
    skip: kubeSkip,
    // the service's image has no agent and no Node: its agent is downloaded by an init container and started through pods/exec
    template: template('two-agents-kubernetes', DOCKER_IMAGE, BARE_IMAGE),
    async agentPids(_server, workspaceId) {
      // the test cluster's node is this machine: the agents are processes here, told apart by their environment
      const agents = readdirSync('/proc').filter((pid) => /^\d+$/.test(pid)).flatMap((pid) => {
        try {
          if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[1] !== '/opt/den/agent/agent.mjs') return [];
          const env = readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0');
          return env.includes(`DEN_WORKSPACE_ID=${workspaceId}`) ? [{ pid: Number(pid), service: env.includes('ROLE=the api service') }] : [];
        } catch {
          return [];
        }
      });
      return { main: agents.find((a) => !a.service)!.pid, api: agents.find((a) => a.service)!.pid };
    },
    driver: async (config) => {
      await ensureClusterImages();
      const { createKubernetesDriver } = await import('../server/runtimes/kubernetes/driver.ts');
      return createKubernetesDriver({
        log: pino({ level: 'silent' }), dataDir: config.dataDir, instance: `sa-${randomUUID().slice(0, 8)}`, downloaderImage: testImage, stopGraceSeconds: 2, startTimeoutMs: 90_000,
      });
    },
  },
];

describe.each(runtimes)('two agents in one workspace on the $name runtime', { timeout: 180_000 }, (runtime) => {
  if (runtime.skip) {
    // reported as skipped with the reason printed above, so CI (which forbids skips) notices
    it.skip(`needs ${runtime.name === 'kubernetes' ? 'the test cluster and Docker' : 'Docker'}: ${runtime.skip}`);
    return;
  }
  let server: TestServer;
  let user: TestUser;
  let client: Api;
  const homes: string[] = [];

  beforeAll(async () => {
    // a short grace: an agent gone for a second counts as lost
    server = await startTestServer({ listen: true, reconcile: { agentGraceMs: 1_000 }, ...(runtime.driver ? { driver: runtime.driver } : {}) });
    user = await setupOwner(server.app);
    client = api(server.app, user.token);
    const pushed = await client.post('/api/v1/templates', { files: { 'template.yaml': JSON.stringify(runtime.template) }, activate: true });
    expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
  });
  afterAll(async () => {
    // what a test left running (the kubernetes runtime's namespaces, the docker runtime's containers) goes with it
    if (server && runtime.driver) {
      const driver = server.den.driver;
      // all at once: on kubernetes each delete waits for its namespace to be gone
      await Promise.all((await driver.listWorkspaceIds().catch(() => [])).map((id) =>
        driver.delete({ id, name: 'cleanup', ownerId: user.userId, ownerName: user.username }, { signal: new AbortController().signal, log: () => {} }).catch(() => undefined)));
    }
    await server?.close();
    for (const home of homes) rmSync(home, { recursive: true, force: true });
  });

  const path = (name: string) => `/api/v1/workspaces/${user.username}/${name}`;

  async function createRunning(name: string): Promise<string> {
    const created = await client.post('/api/v1/workspaces', { name, template: runtime.template.name });
    expect(created.status, JSON.stringify(created.json)).toBe(202);
    await waitForWorkspaceReady(client, user.username, name, READY_TIMEOUT_MS);
    return created.json.workspace.id;
  }

  /** The real `den` CLI, signed in with the owner's token. */
  async function den(args: string[]): Promise<DenResult> {
    const home = mkdtempSync(join(tmpdir(), 'den-service-agents-cli-'));
    homes.push(home);
    return runDen(args, { PATH: process.env.PATH!, HOME: home, XDG_CONFIG_HOME: home, DEN_URL: server.url!, DEN_TOKEN: user.token }, CLI_TIMEOUT_MS);
  }

  async function eventOf(name: string, match: (event: { kind: string; detail: Record<string, any> }) => boolean) {
    const deadline = Date.now() + EVENT_TIMEOUT_MS;
    for (;;) {
      const events = (await client.get(`${path(name)}/events`)).json.events as { kind: string; message: string; detail: Record<string, any> }[];
      const found = events.find(match);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`no such event for ${name} within ${EVENT_TIMEOUT_MS} ms: ${JSON.stringify(events)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }

  // Side by side within a runtime (the runtimes one after another): each test has its own
  // workspace, agents and tokens, and most of each is waiting for them to start.
  it.concurrent('connects both agents with their own tokens, shows both, and `den exec` reaches each', async () => {
    const id = await createRunning('pair');
    expect(server.den.agents.isConnected(id)).toBe(true);
    expect(server.den.agents.isConnected({ workspaceId: id, agent: 'api' })).toBe(true);

    const shown = (await client.get(path('pair'))).json;
    expect(shown.agents).toMatchObject([
      { name: 'main', service: null, state: 'ready', connected: true },
      { name: 'api', service: 'api', state: 'ready', connected: true },
    ]);
    const tokens = await server.store.db.selectFrom('agent_tokens').select(['agent_name', 'token_hash'])
      .where('workspace_id', '=', id).where('revoked_at', 'is', null).orderBy('agent_name').execute();
    expect(tokens.map((t) => t.agent_name)).toEqual(['api', 'main']);
    expect(tokens[0].token_hash).not.toBe(tokens[1].token_hash);

    const inService = await den(['exec', '--service', 'api', 'pair', '--', 'sh', '-c', 'printf "%s|%s" "$ROLE" "$(hostname)"']);
    expect(inService, inService.stderr).toMatchObject({ code: 0 });
    expect(inService.stdout.split('|')[0]).toBe('the api service');
    const inWorkspace = await den(['exec', 'pair', '--', 'sh', '-c', 'printf %s "${ROLE:-unset}"']);
    expect(inWorkspace).toMatchObject({ code: 0, stdout: 'unset' });

    // a terminal session inside the service, listed with the service's sessions only
    let output = '';
    const terminal = await openTerminal({
      baseUrl: server.url!, token: user.token, owner: user.username, workspace: 'pair', service: 'api',
      command: ['sh', '-c', 'printf "[%s]" "$ROLE"; read line; exit 3'], cols: 80, rows: 24,
      onOutput: (data, consumed) => { output += Buffer.from(data).toString(); consumed(); },
    });
    const sessions = await client.get(`${path('pair')}/terminals?service=api`);
    expect(sessions.json.sessions.map((s: { id: string }) => s.id)).toEqual([terminal.attached.sessionId]);
    expect((await client.get(`${path('pair')}/terminals`)).json.sessions).toEqual([]);
    terminal.input('done\r');
    expect(await terminal.ended).toMatchObject({ reason: 'exit', code: 3 });
    expect(output).toContain('[the api service]');

    const listed = await den(['show', 'pair']);
    expect(listed.stdout).toMatch(/Agents:[\s\S]*main\s+the workspace\s+ready\s+connected since/);
    expect(listed.stdout).toMatch(/api\s+service api\s+ready\s+connected since/);

    // a service without an agent, or an unknown one, is refused with a coded sentence
    const unknown = await den(['exec', '--service', 'db', 'pair', '--', 'true']);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toContain("runs no agent beside a service named 'db'");
  });

  it.concurrent('records the service agent\'s death as an event naming it, shows the workspace down, and `den start` brings it back', async () => {
    await createRunning('kill-api');
    // the exec'd shell's parent is the service's agent: it kills the very agent that runs it
    const killed = await den(['exec', '--service', 'api', 'kill-api', '--', 'sh', '-c', 'kill -9 $PPID']);
    expect(killed.code).not.toBe(0);
    const event = await eventOf('kill-api', (e) => e.kind === 'agent_disconnected' && e.detail.agent === 'api');
    expect(event).toMatchObject({ message: expect.stringMatching(/^The agent of service api disconnected/) });
    const shown = (await client.get(path('kill-api'))).json;
    expect(shown.agents.find((a: { name: string }) => a.name === 'api')).toMatchObject({ connected: false, disconnectedAt: expect.any(String) });
    expect(shown.agents.find((a: { name: string }) => a.name === 'main')).toMatchObject({ connected: true });
    const refused = await den(['exec', '--service', 'api', 'kill-api', '--', 'true']);
    expect(refused.code).not.toBe(0);

    // past the grace period the reconciler shows the workspace down, naming the agent
    await waitFor('the workspace shown down', async () => (await client.get(path('kill-api'))).json.health?.state === 'down');
    const down = (await client.get(path('kill-api'))).json;
    expect(down.health.message).toMatch(/^The agent of service api of workspace 'owner\/kill-api' (lost its connection|exited) at /);

    expect((await client.post(`${path('kill-api')}/start`, {})).status).toBe(202);
    await waitFor('the agent of service api back', () => server.den.agents.isConnected({ workspaceId: shown.id, agent: 'api' }), READY_TIMEOUT_MS,
      async () => JSON.stringify((await client.get(`${path('kill-api')}/builds/2/logs`)).json));
    expect(await den(['exec', '--service', 'api', 'kill-api', '--', 'true'])).toMatchObject({ code: 0 });
    await waitFor('the workspace recovered', async () => (await client.get(path('kill-api'))).json.health?.state === 'ok');
  });

  it.concurrent('refuses one agent\'s token as the other, and both once the workspace is deleted', async () => {
    const id = await createRunning('tokens');
    // The real agents' tokens, from the environment they were started with.
    const pids = await runtime.agentPids(server, id);
    const tokenOf = (pid: number) => /(?:^|\0)DEN_AGENT_TOKEN=([^\0]+)/.exec(readFileSync(`/proc/${pid}/environ`, 'latin1'))![1];
    const main = tokenOf(pids.main);
    const service = tokenOf(pids.api);
    expect(main).not.toBe(service);

    const asOther = await dial(server.url!, service, 'main');
    expect(asOther).toMatchObject({ status: 401, code: 'AGENT_UNAUTHORIZED' });
    expect(asOther.message).toContain('belongs to the agent of service api');
    expect(await dial(server.url!, main, 'api')).toMatchObject({ status: 401, code: 'AGENT_UNAUTHORIZED' });

    expect((await client.delete(path('tokens'))).status).toBe(202);
    await waitFor('the workspace deleted', async () => (await client.get(path('tokens'))).status === 404);
    for (const token of [main, service]) expect(await dial(server.url!, token)).toMatchObject({ status: 401, code: 'AGENT_UNAUTHORIZED' });
  });
});

/** Opens the agent link with `token` (as agent `agent` when given); the HTTP refusal, or status 101. */
function dial(baseUrl: string, token: string, agent?: string): Promise<{ status: number; code?: string; message?: string }> {
  const url = `${baseUrl.replace(/^http/, 'ws')}/api/v1/agent/connect${agent ? `?agent=${agent}` : ''}`;
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers: { authorization: `Bearer ${token}` } });
    socket.on('open', () => {
      socket.close();
      resolve({ status: 101 });
    });
    socket.on('unexpected-response', (_request, response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => (body += chunk));
      response.on('end', () => {
        const error = (JSON.parse(body) as { error: { code: string; message: string } }).error;
        resolve({ status: response.statusCode ?? 0, code: error.code, message: error.message });
      });
    });
    socket.on('error', reject);
  });
}

async function waitFor(what: string, probe: () => boolean | Promise<boolean>, timeoutMs = READY_TIMEOUT_MS, explain?: () => Promise<string>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${timeoutMs} ms${explain ? `: ${await explain()}` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
