import type { Kysely } from 'kysely';
import type { AgentManifest } from '../../protocol/agent.ts';
import { AppError } from '../../protocol/errors.ts';
import type { ParameterValue } from '../../protocol/template.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import { issueAgentToken, revokeAgentTokens } from '../agents/tokens.ts';
import type { DriverContext, RuntimeDriver, WorkspaceIdentity } from '../runtimes/driver.ts';
import type { Database } from '../store/schema.ts';
import type { Clock } from '../store/time.ts';
import { getTemplateVersionById } from '../templates/store.ts';
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
}

/** Runs one named step: logs its start and finish with the duration, records its timing. */
export type RunStep = <T>(name: string, work: (context: DriverContext) => Promise<T>) => Promise<T>;

const AGENT_SHUTDOWN_TIMEOUT_MS = 10_000;

/** The steps of each transition. Every step is safe to re-run after a crash (drivers are idempotent). */
export async function runTransition(build: BuildRow, deps: StepDeps, step: RunStep): Promise<void> {
  const identity = await loadIdentity(deps.db, build.workspace_id);
  const now = () => deps.clock.now();
  await enterBuildStatus(deps.db, identity.id, build.transition, now());
  switch (build.transition) {
    case 'start': {
      const { spec, params, owner } = await step('resolve', () => resolveInputs(deps.db, build, identity));
      const services = Object.entries(spec.environment?.services ?? {})
        .map(([service, s]) => ({ service, ports: (s.ports ?? []).map((p) => p.port) }))
        .filter((s) => s.ports.length > 0);
      const endpoints = await step('endpoints', () => deps.driver.resolveEndpoints(identity, services));
      // The agent token is issued with the manifest, so the plan comes first and gets the token after.
      const draft = await step('plan', async () =>
        planWorkspace({ spec, params, workspace: identity, owner, endpoints, accessUrl: deps.accessUrl, agentToken: '' }));
      const token = await step('token', async () =>
        issueAgentToken(deps.db, { workspaceId: identity.id, buildId: build.id, manifest: draft.manifest, now: now() }));
      const plan = { ...draft.plan, agent: { ...draft.plan.agent, token } };
      const manifest: AgentManifest = draft.manifest;
      await step('apply', (context) => deps.driver.start(plan, context));
      await step('agent', async (context) => {
        try {
          await deps.agents.waitForReady(identity.id, build.id, { timeoutMs: readyTimeoutMs(manifest), signal: context.signal });
        } catch (error) {
          // When the agent died, the runtime knows why (its last output); say it in the build log.
          const status = await deps.driver.status(identity).catch(() => undefined);
          if (status?.phase === 'failed' && status.message) context.log(status.message, 'stderr');
          throw error;
        }
      });
      await completeBuildStatus(deps.db, identity.id, build.transition, now());
      return;
    }
    case 'stop': {
      await step('agent-shutdown', () => deps.agents.shutdown(identity.id, { timeoutMs: AGENT_SHUTDOWN_TIMEOUT_MS }));
      await step('runtime-stop', (context) => deps.driver.stop(identity, context));
      await revokeAgentTokens(deps.db, identity.id, now());
      await completeBuildStatus(deps.db, identity.id, build.transition, now());
      return;
    }
    case 'delete': {
      await step('agent-shutdown', () => deps.agents.shutdown(identity.id, { timeoutMs: AGENT_SHUTDOWN_TIMEOUT_MS }));
      await step('runtime-delete', (context) => deps.driver.delete(identity, context));
      await revokeAgentTokens(deps.db, identity.id, now());
      await completeBuildStatus(deps.db, identity.id, build.transition, now());
      return;
    }
  }
}

async function loadIdentity(db: Kysely<Database>, workspaceId: string): Promise<WorkspaceIdentity> {
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
