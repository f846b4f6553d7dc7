import type { Kysely } from 'kysely';
import type { TemplateSpec } from '../../protocol/template-fields.ts';
import type { ServiceStatusDto, WorkspaceStatusName } from '../../protocol/workspaces.ts';
import type { ServiceEndpointRequest, ServiceEndpoints } from '../runtimes/driver.ts';
import type { Database } from '../store/schema.ts';

interface Workspace {
  id: string;
  status: WorkspaceStatusName;
  templateVersionId: string;
  health: { state: 'ok' | 'down'; message: string } | null;
}

/**
 * The environment services of a workspace with what den knows of each: the template's ports, an
 * agent beside it or not, and its state. A running workspace's service is `running` from its
 * last start build on, until the reconciler records a runtime event about it (service_exited,
 * service_oom_killed, service_removed, service_probe_failing...): then it is `down` with that
 * event's sentence. The reconciler records only the first failure of a running workspace, so
 * once the workspace is down for another reason a service without its own event is `unknown`.
 * The state is a read of den's own records; of the runtime only the address of each port is
 * asked (`endpoints`, the driver's resolveEndpoints: stable, no side effect once the workspace
 * has started), for a workspace that runs.
 */
export async function listServiceStatuses(
  db: Kysely<Database>, workspace: Workspace, endpoints: (requests: ServiceEndpointRequest[]) => Promise<ServiceEndpoints>,
): Promise<ServiceStatusDto[]> {
  const version = await db.selectFrom('template_versions').select('spec_json').where('id', '=', workspace.templateVersionId).executeTakeFirst();
  const services = (JSON.parse(version?.spec_json ?? '{}') as TemplateSpec).environment?.services ?? {};
  const names = Object.keys(services);
  if (names.length === 0) return [];
  const started = await db.selectFrom('builds').select('created_at')
    .where('workspace_id', '=', workspace.id).where('transition', '=', 'start')
    .orderBy('number', 'desc').limit(1).executeTakeFirst();
  const deaths = new Map<string, { message: string; ts: string }>();
  if (workspace.status === 'running' && started) {
    const events = await db.selectFrom('workspace_events').select(['kind', 'message', 'ts', 'detail_json'])
      .where('workspace_id', '=', workspace.id).where('kind', 'like', 'service_%').where('ts', '>=', started.created_at)
      .orderBy('id', 'asc').execute();
    for (const event of events) {
      const subject = (JSON.parse(event.detail_json) as { subject?: { type?: string; name?: string } }).subject;
      if (subject?.type === 'service' && subject.name && !deaths.has(subject.name)) deaths.set(subject.name, { message: event.message, ts: event.ts });
    }
  }
  const requests = names.map((service) => ({ service, ports: (services[service]!.ports ?? []).map((port) => port.port) })).filter((request) => request.ports.length > 0);
  // the addresses are extra: a runtime that cannot say (its engine is away) must not fail the read of the workspace
  const addresses = workspace.status === 'running' && requests.length > 0 ? await endpoints(requests).catch((): ServiceEndpoints => ({})) : {};
  return names.map((name) => {
    const service = services[name]!;
    const death = deaths.get(name);
    const down = workspace.health?.state === 'down' ? workspace.health.message : undefined;
    const state = workspace.status === 'running' ? (death ? 'down' : down ? 'unknown' : 'running')
      : workspace.status === 'starting' || workspace.status === 'pending' ? 'starting' : 'stopped';
    return {
      name,
      state,
      message: death?.message ?? (state === 'unknown' ? `Not watched since the workspace went down: ${down}` : null),
      since: death?.ts ?? (state === 'stopped' ? null : started?.created_at ?? null),
      ports: (service.ports ?? []).map((port) => {
        const address = addresses[name]?.[port.port];
        return { port: port.port, ...(port.name ? { name: port.name } : {}), ...(address ? { address: `${address.host}:${address.port}` } : {}) };
      }),
      agent: service.agent === true,
    };
  });
}
