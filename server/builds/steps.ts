import { MAIN_AGENT } from '../../protocol/agent.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Kysely } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { ParameterValue } from '../../protocol/template.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import { forgetUnplannedAgents, workspaceAgents } from '../agents/registry.ts';
import { currentAgentBuild, issueAgentToken, revokeAgentTokens } from '../agents/tokens.ts';
import { assertCapabilities } from '../runtimes/capabilities.ts';
import { agentOfTokenSecret, planAgents, type DriverContext, type RuntimeDriver, type WorkspaceIdentity } from '../runtimes/driver.ts';
import type { Database } from '../store/schema.ts';
import type { EventPublisher } from '../events/bus.ts';
import type { Clock } from '../store/time.ts';
import { getTemplateVersionById } from '../templates/store.ts';
import { upEnvironment } from '../environments/entries.ts';
import { planWorkspace, readyTimeoutMs } from './plan.ts';
import type { BuildRow } from './queue.ts';
import { getUserById } from '../users/users.ts';
import { getWorkspaceIdentity } from '../workspaces/access.ts';
import { completeBuildStatus, enterBuildStatus } from '../workspaces/lifecycle.ts';

export interface StepDeps {
  db: Kysely<Database>;
  clock: Clock;
  driver: RuntimeDriver;
  agents: AgentHub;
  accessUrl: string;
  events: EventPublisher;
  /** den's agent-bundle route and its checksum, for runtimes that download the agent */
  agentDownload?: () => Promise<{ url: string; sha256: string }>;
}

/** Runs one named step: logs its start and finish with the duration, records its timing. */
export type RunStep = <T>(name: string, work: (context: DriverContext) => Promise<T>) => Promise<T>;

const AGENT_SHUTDOWN_TIMEOUT_MS = 10_000;

/** The steps of each transition. Every step is safe to re-run after a crash (drivers are idempotent). */
export async function runTransition(build: BuildRow, deps: StepDeps, step: RunStep): Promise<void> {
  const { agentState, ...identity } = await loadIdentity(deps.db, build.workspace_id);
  const now = () => deps.clock.now();
  await enterBuildStatus(deps.db, deps.events, identity.id, build.transition, now());
  switch (build.transition) {
    case 'start': {
      const { spec, params, owner } = await step('resolve', () => resolveInputs(deps.db, build, identity));
      // The create request was checked; an update to a newer version may need more.
      assertCapabilities(deps.driver, spec);
      const services = Object.entries(spec.environment?.services ?? {})
        .map(([service, s]) => ({ service, ports: (s.ports ?? []).map((p) => p.port) }))
        .filter((s) => s.ports.length > 0);
      const endpoints = await step('endpoints', () => deps.driver.resolveEndpoints(identity, services));
      const agentDownload = deps.driver.agentDelivery.includes('download') ? await deps.agentDownload?.() : undefined;
      const { plan, manifests } = await step('plan', async () => planWorkspace({
        spec, params, workspace: identity, owner, endpoints, accessUrl: deps.accessUrl, agentDelivery: deps.driver.agentDelivery, agentDownload,
        syncAgents: deps.driver.capabilities.sync === 'enforced',
      }));
      const agents = planAgents(plan);
      await forgetUnplannedAgents(deps.db, identity.id, agents.map((a) => a.name), now());
      // An agent whose startup failed stays up (for debugging); starting again means a new agent
      // that runs the startup scripts again, which re-applying an unchanged plan would not give.
      if (agentState === 'start_error') await step('agent-replace', (context) => retireAgent(deps, identity, context));
      // A token is issued only when the driver (re)creates the agent: an unchanged workspace keeps
      // its running agent, its token and its terminal sessions.
      const secret = (name: string) => {
        const agent = agents.find((a) => a.name === agentOfTokenSecret(name));
        if (!agent) throw new Error(`The plan names a secret '${name}' den does not know; this is a bug in den.`);
        return issueAgentToken(deps.db, { workspaceId: identity.id, agent: agent.name, buildId: build.id, manifest: manifests[agent.name], revision: agent.revision, now: now() });
      };
      await step('apply', (context) => deps.driver.start(plan, { ...context, secret }));
      await step('agent', async (context) => {
        try {
          // Each agent to wait for is the one holding its live token: this build's when the
          // driver started one, an earlier build's when the agent kept running.
          await Promise.all(agents.map(async (agent) => {
            const ref = { workspaceId: identity.id, agent: agent.name };
            const agentBuild = (await currentAgentBuild(deps.db, ref)) ?? build.id;
            await deps.agents.waitForReady(ref, agentBuild, { timeoutMs: readyTimeoutMs(manifests[agent.name]), signal: context.signal });
          }));
        } catch (error) {
          // When the agent died, the runtime knows why (its last output); say it in the build log.
          const status = await deps.driver.status(identity).catch(() => undefined);
          if (status?.phase === 'failed' && status.message) context.log(status.message, 'stderr');
          throw error;
        }
      });
      // versions of the services, and the tasks whose version changed (they need the agents)
      await step('environment', (context) => upEnvironment(deps, identity.id, spec.environment, plan.services, context, build.id));
      await completeBuildStatus(deps.db, deps.events, identity.id, build.transition, now());
      return;
    }
    case 'stop': {
      await step('agent-shutdown', () => shutdownAgents(deps, identity.id));
      await step('runtime-stop', (context) => deps.driver.stop(identity, context));
      await revokeAgentTokens(deps.db, identity.id, now());
      await completeBuildStatus(deps.db, deps.events, identity.id, build.transition, now());
      return;
    }
    case 'delete': {
      await step('agent-shutdown', () => shutdownAgents(deps, identity.id));
      await step('runtime-delete', (context) => deps.driver.delete(identity, context));
      await revokeAgentTokens(deps.db, identity.id, now());
      await completeBuildStatus(deps.db, deps.events, identity.id, build.transition, now());
      return;
    }
  }
}

/** Asks every agent of the workspace to shut down, in parallel (each bounded by the timeout). */
async function shutdownAgents(deps: StepDeps, workspaceId: string): Promise<void> {
  const names = await workspaceAgents(deps.db, workspaceId);
  // a workspace whose agents never reported has no rows: its main agent may still be connected
  const all = names.includes(MAIN_AGENT) ? names : [MAIN_AGENT, ...names];
  await Promise.all(all.map((agent) => deps.agents.shutdown({ workspaceId, agent }, { timeoutMs: AGENT_SHUTDOWN_TIMEOUT_MS })));
}

/** How often retireAgent looks whether the runtime saw the agent exit. */
const AGENT_EXIT_POLL_MS = 100;

/** Asks the agent to exit and waits (bounded) until the runtime no longer runs it. */
async function retireAgent(deps: StepDeps, identity: WorkspaceIdentity, context: DriverContext): Promise<void> {
  context.log('The agent reported a startup error; replacing it, so the startup scripts run again.');
  await deps.agents.shutdown(identity.id, { timeoutMs: AGENT_SHUTDOWN_TIMEOUT_MS });
  const deadline = deps.clock.now().getTime() + AGENT_SHUTDOWN_TIMEOUT_MS;
  while ((await deps.driver.status(identity)).phase === 'running' && deps.clock.now().getTime() < deadline && !context.signal.aborted) {
    await sleep(AGENT_EXIT_POLL_MS, undefined, { signal: context.signal }).catch(() => undefined);
  }
}

async function loadIdentity(db: Kysely<Database>, workspaceId: string): Promise<WorkspaceIdentity & { agentState: string | null }> {
  const identity = await getWorkspaceIdentity(db, workspaceId);
  if (!identity) throw new AppError('WORKSPACE_NOT_FOUND', 'The workspace of this build no longer exists.');
  return identity;
}

async function resolveInputs(db: Kysely<Database>, build: BuildRow, identity: WorkspaceIdentity) {
  const version = await getTemplateVersionById(db, build.template_version_id);
  if (!version) {
    throw new AppError('TEMPLATE_VERSION_NOT_FOUND', 'The template version of this build no longer exists. Update the workspace to the active version (`den update`).');
  }
  const owner = await getUserById(db, identity.ownerId);
  return {
    spec: version.spec,
    params: JSON.parse(build.params_json) as Record<string, ParameterValue>,
    owner: { id: owner.id, name: owner.username, displayName: owner.display_name },
  };
}
