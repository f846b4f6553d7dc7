import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { templateSchema, type TemplateInput } from '../../protocol/template.ts';
import { currentAgentBuild, issueAgentToken } from '../agents/tokens.ts';
import { planWorkspace } from '../builds/plan.ts';
import { assertCapabilities } from './capabilities.ts';
import type { Config } from '../config.ts';
import { iso } from '../store/time.ts';
import { execInWorkspace } from '../../test/support/exec.ts';
import { startTestServer, type TestServer } from '../../test/support/harness.ts';
import type { AgentTarget, ExecSession } from '../agents/hub-types.ts';
import { agentOfTokenSecret, planAgents, type RuntimeDriver, type StartContext, type WorkspaceIdentity, type WorkspacePlan } from './driver.ts';

/**
 * The contract every RuntimeDriver passes against a real backend (`runDriverContract` in each
 * driver's test). It runs a real den server (listening, so the real agent dials it) and drives
 * the driver directly with plans made by the real planner.
 *
 * What a driver must provide for it:
 *  - services are started with PORT set to the port they must listen on;
 *  - `node` is on the PATH of the workspace and of services (the den workspace images have it).
 */
export interface DriverContractOptions {
  /** the workspace and service image (docker, kubernetes); the process runtime ignores it */
  image?: string;
  /** how long a workspace may take to become ready */
  readyTimeoutMs?: number;
  /**
   * false for a runtime that enforces memory and CPU but cannot set a per-workspace pids limit
   * (Kubernetes sets it per node); its build log says so, and the limit is not checked.
   */
  pidsLimit?: boolean;
  /**
   * Runs the contract's tests side by side (vitest's maxConcurrency at a time). Each test has its
   * own workspace, agents and tokens, so none depends on another; on a runtime whose tests spend
   * their time waiting on the backend (pods scheduled, images unpacked, containers started) this
   * takes minutes off the file. Off by default: a runtime that shares one resource between
   * workspaces opts in only once its tests are green side by side.
   */
  concurrent?: boolean;
}

const AGENT_READY_TIMEOUT_MS = 30_000;
const SERVICE_PORT = 8080;

export function runDriverContract(
  name: string,
  makeDriver: (config: Config) => RuntimeDriver | Promise<RuntimeDriver>,
  options: DriverContractOptions = {},
): void {
  const image = options.image ?? 'den/base:latest';
  const readyTimeoutMs = options.readyTimeoutMs ?? AGENT_READY_TIMEOUT_MS;

  describe(`RuntimeDriver contract: ${name}`, { timeout: 90_000, concurrent: options.concurrent ?? false }, () => {
    let server: TestServer;
    let driver: RuntimeDriver;
    let userId: string;
    let versionId: string;
    let templateId: string;

    beforeAll(async () => {
      server = await startTestServer({ listen: true, startWorkers: false, driver: async (config) => (driver = await makeDriver(config)) });
      ({ userId, templateId, versionId } = await seedTemplate(server));
    });
    afterAll(async () => {
      if (!server) return;
      for (const id of await driver.listWorkspaceIds()) {
        await driver.delete({ id, name: 'cleanup', ownerId: userId, ownerName: 'contract' }, recorder().context).catch(() => undefined);
      }
      await server.close();
    });

    async function newWorkspace(wsName: string): Promise<WorkspaceIdentity> {
      const id = randomUUID();
      const now = iso(new Date());
      await server.store.db.insertInto('workspaces').values({
        id, name: wsName, owner_id: userId, template_id: templateId, template_version_id: versionId, params_json: '{}',
        status: 'pending', last_build_id: null, created_at: now, updated_at: now, deleted_at: null,
      }).execute();
      return { id, name: wsName, ownerId: userId, ownerName: 'contract' };
    }

    /** The planner as the start build calls it, with what this driver offers to deliver the agent. */
    const plan = (workspace: WorkspaceIdentity, template: TemplateInput, endpoints: Awaited<ReturnType<RuntimeDriver['resolveEndpoints']>>) =>
      planWorkspace({
        spec: templateSchema.parse(template), params: {}, workspace, owner: { id: userId, name: 'contract' }, endpoints,
        accessUrl: server.config.accessUrl, agentDelivery: driver.agentDelivery,
      });

    /** Plans, issues each agent's token, starts through the driver and waits for every real agent's `ready`. */
    async function startReady(workspace: WorkspaceIdentity, template: TemplateInput): Promise<{ plan: WorkspacePlan; buildId: string; log: string[]; secretsAsked: () => number }> {
      const spec = templateSchema.parse(template);
      const services = Object.entries(spec.environment?.services ?? {}).map(([service, s]) => ({ service, ports: (s.ports ?? []).map((p) => p.port) }));
      const endpoints = await driver.resolveEndpoints(workspace, services);
      const planned = plan(workspace, template, endpoints);
      const agents = planAgents(planned.plan);
      const buildId = randomUUID();
      const { context, lines, secretsAsked } = recorder((name) => {
        const agent = agents.find((a) => a.name === agentOfTokenSecret(name));
        expect(agent, `the secret ${name} names an agent of the plan`).toBeDefined();
        return issueAgentToken(server.store.db, { workspaceId: workspace.id, agent: agent!.name, buildId, manifest: planned.manifests[agent!.name], now: new Date() });
      });
      await driver.start(planned.plan, context);
      // As the start build does: the agent holding the live token is the one to wait for.
      let mainBuild: string = buildId;
      for (const agent of agents) {
        const ref = { workspaceId: workspace.id, agent: agent.name };
        const agentBuild = (await currentAgentBuild(server.store.db, ref)) ?? buildId;
        await server.den.agents.waitForReady(ref, agentBuild, { timeoutMs: readyTimeoutMs });
        if (agent.name === 'main') mainBuild = agentBuild;
      }
      return { plan: planned.plan, buildId: mainBuild, log: lines, secretsAsked };
    }

    const exec = (agent: AgentTarget, command: string[]) => execInWorkspace(server.den, agent, command);

    const basic = (): TemplateInput => ({ name: 'contract', workspace: { image, env: { CONTRACT_GREETING: 'hello ${{ owner.name }}' } } });

    /** One HTTP service answering `pong from <name>`, listening after `delayMs`. */
    const serviceTemplate = (serviceName: string, delayMs = 0): TemplateInput => ({
      name: 'contract',
      workspace: { image },
      environment: {
        services: {
          [serviceName]: {
            image,
            command: ['node', '-e', `setTimeout(() => require('http').createServer((q, s) => s.end('pong from ${serviceName}')).listen(Number(process.env.PORT)), ${delayMs})`],
            ports: [{ port: SERVICE_PORT }],
            readiness: { tcp: SERVICE_PORT, timeout: '20s', interval: '100ms' },
          },
        },
      },
    });

    /** GET url from inside the workspace, giving up after a few seconds (a removed service may just not answer). */
    const fetchOnce = (workspaceId: string, url: string) => exec(workspaceId, ['node', '-e',
      `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(5000) }).then((r) => r.text()).then((t) => process.stdout.write(t), () => process.exit(3))`]);
    /**
     * A request to a service from inside the workspace, retried for a few seconds while it fails:
     * on Kubernetes a new pod's address reaches the Service proxy and the NetworkPolicy
     * implementation a moment after the pod is ready (they sync on their own clock), so a service
     * must answer within seconds, not at once. A request expected to fail uses fetchOnce.
     */
    const fetchFrom = async (workspaceId: string, url: string) => {
      let reply = await fetchOnce(workspaceId, url);
      for (const deadline = Date.now() + 15_000; reply.code !== 0 && Date.now() < deadline;) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        reply = await fetchOnce(workspaceId, url);
      }
      return reply;
    };

    it('reports absent before a workspace exists and lists nothing for it', async () => {
      const workspace = await newWorkspace('absent');
      expect((await driver.status(workspace)).phase).toBe('absent');
      expect(await driver.listWorkspaceIds()).not.toContain(workspace.id);
    });

    it('starts a workspace whose agent dials the server and reports ready, with the plan env', async () => {
      const workspace = await newWorkspace('starts');
      await startReady(workspace, basic());
      expect(server.den.agents.isConnected(workspace.id)).toBe(true);
      expect((await driver.status(workspace)).phase).toBe('running');
      expect(await driver.listWorkspaceIds()).toContain(workspace.id);
      const env = await exec(workspace.id, ['sh', '-c', 'echo "$DEN_WORKSPACE_NAME|$DEN_OWNER|$CONTRACT_GREETING"']);
      expect(env).toMatchObject({ code: 0, stdout: 'starts|contract|hello contract\n' });
      await driver.delete(workspace, recorder().context);
    });

    it('changes nothing when an unchanged plan is applied again: no new secret, the same agent, its sessions alive', async () => {
      const workspace = await newWorkspace('twice');
      const { plan, buildId } = await startReady(workspace, basic());
      const session = await server.den.agents.exec(workspace.id, { command: ['cat'] });
      expect(await echoThrough(session, 'before\n')).toBe('before\n');

      const again = recorder();
      await driver.start(plan, again.context);
      expect(again.secretsAsked()).toBe(0);
      expect((await driver.status(workspace)).phase).toBe('running');
      expect(server.den.agents.isConnected(workspace.id)).toBe(true);
      expect(await currentAgentBuild(server.store.db, workspace.id)).toBe(buildId);
      // the exec channel is on the agent that was already running: had it restarted, cat would be gone
      expect(await echoThrough(session, 'after\n')).toBe('after\n');
      session.closeStdin();
      expect(await session.exit).toBe(0);
      await driver.delete(workspace, recorder().context);
    });

    it('runs a second agent beside a service that asks for one: its own token, its own connection, exec in the service\'s environment', async () => {
      const workspace = await newWorkspace('two-agents');
      const template: TemplateInput = {
        name: 'contract',
        workspace: { image },
        environment: {
          services: {
            api: {
              image,
              command: ['node', '-e', `require('http').createServer((q, s) => s.end('pong from api')).listen(Number(process.env.PORT))`],
              env: { ROLE: 'the api service' },
              ports: [{ port: SERVICE_PORT }],
              readiness: { tcp: SERVICE_PORT, timeout: '20s', interval: '100ms' },
              agent: true,
            },
          },
        },
      };
      if (driver.capabilities.serviceAgents === 'unsupported') {
        // refused before any build, naming the feature
        expect(() => assertCapabilities(driver, templateSchema.parse(template))).toThrow(/serviceAgents/);
        return;
      }
      const { plan: planned, secretsAsked } = await startReady(workspace, template);
      expect(planAgents(planned).map((a) => a.name)).toEqual(['main', 'api']);
      expect(secretsAsked()).toBe(2);
      const api = { workspaceId: workspace.id, agent: 'api' };
      expect(server.den.agents.isConnected(workspace.id)).toBe(true);
      expect(server.den.agents.isConnected(api)).toBe(true);
      // each agent runs where it belongs: the service's agent sees the service's environment
      expect(await exec(api, ['sh', '-c', 'printf %s "$ROLE"'])).toMatchObject({ code: 0, stdout: 'the api service' });
      expect(await exec(workspace.id, ['sh', '-c', 'printf %s "${ROLE:-unset}"'])).toMatchObject({ code: 0, stdout: 'unset' });
      const tokens = await server.store.db.selectFrom('agent_tokens').select(['agent_name', 'token_hash'])
        .where('workspace_id', '=', workspace.id).where('revoked_at', 'is', null).orderBy('agent_name').execute();
      expect(tokens.map((t) => t.agent_name)).toEqual(['api', 'main']);
      expect(tokens[0].token_hash).not.toBe(tokens[1].token_hash);

      // applied again unchanged: both agents keep running, no token is issued
      const again = recorder();
      await driver.start(planned, again.context);
      expect(again.secretsAsked()).toBe(0);
      expect(server.den.agents.isConnected(api)).toBe(true);
      await driver.delete(workspace, recorder().context);
    });

    it('removes on re-apply a service the plan no longer has', async () => {
      const workspace = await newWorkspace('drops-service');
      const withService = serviceTemplate('gone-soon');
      await startReady(workspace, withService);
      const url = (await exec(workspace.id, ['sh', '-c', 'printf %s "$DEN_SERVICE_GONE_SOON_URL"'])).stdout;
      expect(await fetchFrom(workspace.id, url)).toMatchObject({ code: 0, stdout: 'pong from gone-soon' });

      await startReady(workspace, basic());
      const after = await fetchOnce(workspace.id, url);
      expect(after.code).not.toBe(0);
      await driver.delete(workspace, recorder().context);
    });

    it('resolves the same service endpoints across stop and start', async () => {
      const workspace = await newWorkspace('stable-endpoints');
      const request = [{ service: 'web-api', ports: [SERVICE_PORT] }];
      await startReady(workspace, serviceTemplate('web-api'));
      const before = await driver.resolveEndpoints(workspace, request);
      await server.den.agents.shutdown(workspace.id, { timeoutMs: 5_000 });
      await driver.stop(workspace, recorder().context);
      expect(await driver.resolveEndpoints(workspace, request)).toEqual(before);
      await startReady(workspace, serviceTemplate('web-api'));
      expect(await driver.resolveEndpoints(workspace, request)).toEqual(before);
      await driver.delete(workspace, recorder().context);
    });

    it('applies resource limits where it declares them enforced, and still starts the workspace where it ignores them', async () => {
      const workspace = await newWorkspace('limited');
      await startReady(workspace, { ...basic(), workspace: { ...basic().workspace, resources: { memory: '300Mi', pids: 300 } } });
      if (driver.capabilities.resources !== 'enforced') {
        // ignored (the build log says so): the limits must not keep the workspace from running
        expect(await exec(workspace.id, ['true'])).toMatchObject({ code: 0 });
        await driver.delete(workspace, recorder().context);
        return;
      }
      // the limits the runtime set on the workspace's cgroup (v2 files first, then v1's)
      const limits = await exec(workspace.id, ['sh', '-c',
        'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max']);
      expect(limits.code).toBe(0);
      const [memory, pids] = limits.stdout.split('\n');
      expect(memory).toBe(String(300 * 1024 * 1024));
      if (options.pidsLimit !== false) expect(pids).toBe('300');
      await driver.delete(workspace, recorder().context);
    });

    it('converges on the next apply after an apply aborted half-way', async () => {
      const workspace = await newWorkspace('aborted');
      const template = serviceTemplate('slow', 1_500);
      const spec = templateSchema.parse(template);
      const endpoints = await driver.resolveEndpoints(workspace, [{ service: 'slow', ports: [SERVICE_PORT] }]);
      const { plan: aborting } = plan(workspace, template, endpoints);
      const abort = new AbortController();
      const aborted: StartContext = {
        // the service was started and its readiness is being waited for: abort there
        log: (line) => { if (/service slow/i.test(line) && !abort.signal.aborted) abort.abort(new Error('build canceled')); },
        signal: abort.signal,
        secret: async () => 'unused',
      };
      await driver.start(aborting, aborted).then(() => undefined, () => undefined);
      expect(abort.signal.aborted).toBe(true);

      await startReady(workspace, template);
      expect((await driver.status(workspace)).phase).toBe('running');
      const url = (await exec(workspace.id, ['sh', '-c', 'printf %s "$DEN_SERVICE_SLOW_URL"'])).stdout;
      expect(await fetchFrom(workspace.id, url)).toMatchObject({ code: 0, stdout: 'pong from slow' });
      await driver.delete(workspace, recorder().context);
    });

    it('keeps the home across stop and start, and removes everything on delete', async () => {
      const workspace = await newWorkspace('keeps-home');
      await startReady(workspace, basic());
      expect((await exec(workspace.id, ['sh', '-c', 'echo kept > "$HOME/proof.txt"'])).code).toBe(0);

      await server.den.agents.shutdown(workspace.id, { timeoutMs: 5_000 });
      await driver.stop(workspace, recorder().context);
      expect((await driver.status(workspace)).phase).toBe('stopped');
      await driver.stop(workspace, recorder().context); // stop is idempotent too

      await startReady(workspace, basic());
      expect(await exec(workspace.id, ['sh', '-c', 'cat "$HOME/proof.txt"'])).toMatchObject({ code: 0, stdout: 'kept\n' });

      await driver.delete(workspace, recorder().context);
      expect((await driver.status(workspace)).phase).toBe('absent');
      expect(await driver.listWorkspaceIds()).not.toContain(workspace.id);
      await driver.delete(workspace, recorder().context); // and so is delete
    });

    it('runs environment services the workspace reaches through DEN_SERVICE_<NAME>_URL', async () => {
      const workspace = await newWorkspace('with-service');
      const template: TemplateInput = {
        name: 'contract',
        workspace: { image },
        environment: {
          services: {
            'web-api': {
              image,
              command: ['node', '-e', `require('http').createServer((q, s) => s.end('pong from ' + process.env.SERVICE_NAME)).listen(Number(process.env.PORT), () => console.log('listening'))`],
              env: { SERVICE_NAME: 'web-api' },
              ports: [{ port: SERVICE_PORT }],
              readiness: { http: { port: SERVICE_PORT, path: '/' }, timeout: '20s', interval: '100ms' },
            },
          },
        },
      };
      const { log } = await startReady(workspace, template);
      expect(log.join('\n')).toContain('listening');
      const url = (await exec(workspace.id, ['sh', '-c', 'printf %s "$DEN_SERVICE_WEB_API_URL"'])).stdout;
      expect(await fetchFrom(workspace.id, url)).toMatchObject({ code: 0, stdout: 'pong from web-api' });
      await driver.delete(workspace, recorder().context);
    });

    it('shows a service\'s log: the tail, and live lines while following', async () => {
      const workspace = await newWorkspace('service-logs');
      const template: TemplateInput = {
        name: 'contract',
        workspace: { image },
        environment: {
          services: {
            echo: {
              image,
              command: ['node', '-e', `console.log('boot one'); console.error('boot two'); require('http').createServer((q, s) => { console.log('request ' + q.url); s.end('ok'); }).listen(Number(process.env.PORT), () => console.log('listening'))`],
              ports: [{ port: SERVICE_PORT }],
              readiness: { tcp: SERVICE_PORT, timeout: '20s', interval: '100ms' },
            },
          },
        },
      };
      await startReady(workspace, template);
      const read = async (options: { tail?: number }) => {
        const lines: string[] = [];
        for await (const entry of await driver.serviceLogs(workspace, 'echo', { ...options, follow: false, signal: new AbortController().signal })) lines.push(entry.line);
        return lines;
      };
      const all = await read({});
      expect(all).toEqual(expect.arrayContaining(['boot one', 'boot two', 'listening']));
      // the last line of the log as kept: a runtime may keep stdout and stderr lines written at
      // nearly the same moment in either order (docker copies the two streams separately)
      expect(await read({ tail: 1 })).toEqual([all.at(-1)]);

      const abort = new AbortController();
      const followed: string[] = [];
      const following = (async () => {
        for await (const entry of await driver.serviceLogs(workspace, 'echo', { tail: 0, follow: true, signal: abort.signal })) {
          followed.push(entry.line);
          if (entry.line === 'request /live') abort.abort();
        }
      })();
      // Asks again until the line arrives: the follower may attach after the first request.
      const deadline = Date.now() + 20_000;
      while (!followed.includes('request /live') && Date.now() < deadline) {
        await exec(workspace.id, ['node', '-e', 'fetch(process.env.DEN_SERVICE_ECHO_URL + "/live").then((r) => r.text())']);
        await Promise.race([following, new Promise((resolve) => setTimeout(resolve, 300))]);
      }
      abort.abort();
      await following;
      expect(followed).toContain('request /live');
      expect(followed).not.toContain('boot one');

      const unknown = await driver.serviceLogs(workspace, 'no-such-service', { follow: false, signal: new AbortController().signal })
        .then(() => undefined, (error: { code?: string }) => error);
      expect(unknown?.code).toBe('WORKSPACE_NOT_RUNNING');
      await driver.delete(workspace, recorder().context);
    });

    it('fails a start whose service never becomes ready, with its last log lines, and leaves nothing running', async () => {
      const workspace = await newWorkspace('never-ready');
      const spec = templateSchema.parse({
        name: 'contract',
        workspace: { image },
        environment: {
          services: {
            stuck: {
              image,
              command: ['sh', '-c', 'echo booting the stuck service; echo cannot bind the port >&2; sleep 600'],
              ports: [{ port: SERVICE_PORT }],
              readiness: { tcp: SERVICE_PORT, timeout: '2s', interval: '200ms' },
            },
          },
        },
      } satisfies TemplateInput);
      const endpoints = await driver.resolveEndpoints(workspace, [{ service: 'stuck', ports: [SERVICE_PORT] }]);
      const { context } = recorder();
      const failure = await driver.start(plan(workspace, spec, endpoints).plan, context).then(() => undefined, (error: unknown) => error as { code?: string; message: string; detail?: string });
      expect(failure).toBeDefined();
      expect(failure!.code).toBe('RUNTIME_ERROR');
      expect(`${failure!.message}\n${failure!.detail ?? ''}`).toContain('cannot bind the port');
      expect(['stopped', 'absent', 'failed']).toContain((await driver.status(workspace)).phase);
      expect(server.den.agents.isConnected(workspace.id)).toBe(false);
      await driver.delete(workspace, recorder().context);
      expect((await driver.status(workspace)).phase).toBe('absent');
    });
  });
}

/** Writes `text` to an exec session running `cat` and resolves with what comes back. */
async function echoThrough(session: ExecSession, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let received = '';
    const onData = (chunk: Buffer) => {
      received += chunk.toString('utf8');
      if (received.length >= text.length) {
        session.stdio.off('data', onData);
        resolve(received);
      }
    };
    session.stdio.on('data', onData);
    session.exit.then((code) => reject(new Error(`The exec session ended (exit ${code}) before echoing ${JSON.stringify(text)}.`)), reject);
    session.stdio.write(text);
  });
}

/** A StartContext that keeps the lines the driver logged and counts the secrets it asked for. */
function recorder(secret: (name: string) => Promise<string> = async () => 'unused'): { context: StartContext; lines: string[]; secretsAsked: () => number } {
  const lines: string[] = [];
  let asked = 0;
  return {
    lines,
    secretsAsked: () => asked,
    context: { log: (line) => lines.push(line), signal: new AbortController().signal, secret: (name) => (asked++, secret(name)) },
  };
}

async function seedTemplate(server: TestServer): Promise<{ userId: string; templateId: string; versionId: string }> {
  const db = server.store.db;
  const now = iso(new Date());
  const userId = randomUUID();
  const templateId = randomUUID();
  const versionId = randomUUID();
  await db.insertInto('users').values({
    id: userId, username: `contract-${userId.slice(0, 8)}`, display_name: 'Contract', role: 'member', password_hash: null, suspended: 0, created_at: now, updated_at: now,
  }).execute();
  await db.insertInto('templates').values({
    id: templateId, name: `contract-${templateId.slice(0, 8)}`, display_name: 'Contract', description: '', icon: null,
    active_version_id: versionId, created_by: userId, created_at: now, updated_at: now,
  }).execute();
  await db.insertInto('template_versions').values({
    id: versionId, template_id: templateId, number: 1, spec_json: '{}', files_json: '{}', message: '', created_by: userId, created_at: now,
  }).execute();
  return { userId, templateId, versionId };
}
