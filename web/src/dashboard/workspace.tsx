import { lazy, Suspense, useState } from 'react';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { Link, useLocation } from 'wouter';
import type { WorkspaceTransition } from '../../../client/workspaces.ts';
import type { TemplateSpec } from '../../../protocol/template-fields.ts';
import type { AgentDto, BuildDto, BuildLogLine, ServiceStatusDto, WorkspaceDto } from '../../../protocol/workspaces.ts';
import type { ServiceLogLine } from '../../../protocol/services.ts';
import { den, errorText } from './api.ts';
import { EnvironmentSection } from './environment.tsx';
import { useStream } from './stream.ts';
import { ActionButton, Age, NotFound, Problem, RequestError, ServiceState, Status, usePageTitle } from './ui.tsx';

const TerminalTab = lazy(() => import('./terminal-tab.tsx'));

export function WorkspacePage({ owner, name }: { owner: string; name: string }) {
  usePageTitle(`${owner}/${name}`);
  const workspace = useQuery({ queryKey: ['workspace', owner, name], queryFn: ({ signal }) => den().workspaces.get(owner, name, signal) });
  if (workspace.isPending) return <p role="status">Loading {owner}/{name}…</p>;
  if (workspace.error) {
    const status = (workspace.error as { status?: number }).status;
    if (status === 404) return <NotFound what={`There is no workspace ${owner}/${name} that you can see.`} />;
    if (status === 403) return <Problem title="You do not have access to this workspace">{errorText(workspace.error)}</Problem>;
    return <RequestError error={workspace.error} />;
  }
  return <Loaded workspace={workspace.data} />;
}

function Loaded({ workspace }: { workspace: WorkspaceDto }) {
  const { owner, name } = workspace;
  const spec = useQuery({
    queryKey: ['template-version', workspace.template, workspace.templateVersion],
    queryFn: () => den().templates.version(workspace.template, workspace.templateVersion),
    staleTime: Infinity,
  });
  const terminals = useTerminalTabs();
  const running = workspace.status === 'running';
  return (
    <article aria-labelledby="workspace-title">
      <div className="heading">
        <h1 id="workspace-title">{owner}/{name}</h1>
        <Status value={workspace.status} />
      </div>
      <dl className="facts">
        <dt>Template</dt><dd>{workspace.template} v{workspace.templateVersion}{workspace.outdated && <span className="status busy">update available</span>}</dd>
        <dt>Agent</dt><dd data-testid="agent-state">{workspace.agentState ?? 'not connected'}</dd>
        {workspace.health && <><dt>Health</dt><dd>{workspace.health.state}: {workspace.health.message}</dd></>}
        <dt>Created</dt><dd><Age at={workspace.createdAt} /></dd>
        {workspace.isolation?.warning && <><dt>Isolation</dt><dd>{workspace.isolation.warning}</dd></>}
      </dl>
      <Actions workspace={workspace} />
      <Builds workspace={workspace} />
      {running && <Terminals owner={owner} name={name} tabs={terminals} />}
      <Apps owner={owner} name={name} running={running} />
      {(workspace.services ?? []).length > 0 && (
        <Services owner={owner} name={name} services={workspace.services!} agents={workspace.agents ?? []}
          onTerminal={running ? (service) => terminals.open(service) : undefined} />
      )}
      <EnvironmentSection owner={owner} name={name} embedded />
      {(workspace.agents ?? []).length > 0 && <Agents agents={workspace.agents!} />}
      <section aria-labelledby="params-title">
        <h2 id="params-title">Parameters</h2>
        {Object.keys(workspace.params).length === 0 ? <p>This workspace has no parameters.</p> : (
          <table className="list"><tbody>
            {Object.entries(workspace.params).map(([key, value]) => <tr key={key}><th scope="row">{key}</th><td><code>{typeof value === 'string' ? value : JSON.stringify(value)}</code></td></tr>)}
          </tbody></table>
        )}
      </section>
    </article>
  );
}

const LOSES_DATA: Partial<Record<WorkspaceTransition, string>> = {
  delete: 'The workspace, its home directory and its environment\'s data are deleted. This cannot be undone.',
  stop: 'Running programs and open terminals end; the home directory is kept.',
  restart: 'Running programs and open terminals end; the home directory is kept.',
  update: 'The workspace restarts on the active template version: running programs and open terminals end.',
};

function Actions({ workspace }: { workspace: WorkspaceDto }) {
  const queries = useQueryClient();
  const [, navigate] = useLocation();
  const action = useMutation({
    mutationFn: (transition: WorkspaceTransition) => den().workspaces.transition(workspace.owner, workspace.name, transition),
    onSuccess: async (_result, transition) => {
      await queries.invalidateQueries({ queryKey: ['workspace', workspace.owner, workspace.name] });
      await queries.invalidateQueries({ queryKey: ['builds', workspace.owner, workspace.name] });
      await queries.invalidateQueries({ queryKey: ['workspaces'] });
      if (transition === 'delete') navigate('/workspaces');
    },
  });
  const busy = action.isPending || ['starting', 'stopping', 'deleting', 'pending'].includes(workspace.status);
  const running = workspace.status === 'running';
  const buttons: { transition: WorkspaceTransition; label: string; show: boolean }[] = [
    { transition: 'start', label: 'Start', show: !running },
    { transition: 'stop', label: 'Stop', show: running },
    { transition: 'restart', label: 'Restart', show: running },
    { transition: 'update', label: 'Update', show: workspace.outdated },
    { transition: 'delete', label: 'Delete', show: true },
  ];
  return (
    <div className="actions" role="group" aria-label="Workspace actions">
      {buttons.filter((button) => button.show).map((button) => (
        <ActionButton key={button.transition} label={button.label} confirm={LOSES_DATA[button.transition]} disabled={busy}
          danger={button.transition === 'delete'} onAction={() => action.mutate(button.transition)} />
      ))}
      <RequestError error={action.error} />
    </div>
  );
}

function Builds({ workspace }: { workspace: WorkspaceDto }) {
  const { owner, name } = workspace;
  const builds = useQuery({ queryKey: ['builds', owner, name], queryFn: () => den().workspaces.builds(owner, name) });
  const list = builds.data?.builds ?? [];
  const [chosen, setChosen] = useState<number>();
  const shown = list.find((build) => build.number === chosen) ?? list[0];
  return (
    <section aria-labelledby="builds-title">
      <h2 id="builds-title">Builds</h2>
      <RequestError error={builds.error} />
      {list.length > 1 && (
        <label>Build
          <select value={shown?.number} onChange={(event) => setChosen(Number(event.target.value))}>
            {list.map((build) => <option key={build.number} value={build.number}>#{build.number} {build.transition} — {build.state}</option>)}
          </select>
        </label>
      )}
      {shown && <Build owner={owner} name={name} summary={shown} />}
    </section>
  );
}

function Build({ owner, name, summary }: { owner: string; name: string; summary: BuildDto }) {
  const build = useQuery({
    queryKey: ['builds', owner, name, summary.number],
    queryFn: ({ signal }) => den().workspaces.build(owner, name, summary.number, signal),
    // the build's steps change while it runs; the event stream refreshes this too
    refetchInterval: (query) => (query.state.data && ['queued', 'running'].includes(query.state.data.state) ? 2_000 : false),
  });
  const lines = useStream<BuildLogLine>(
    (signal) => den().workspaces.followLogs(owner, name, summary.number, { signal }),
    [owner, name, summary.number],
  );
  const data = build.data ?? summary;
  // a timeline: each step's bar starts where it started and is as long as it took
  const starts = data.steps.map((step) => Date.parse(step.startedAt));
  const origin = Math.min(...starts);
  const span = Math.max(1, ...data.steps.map((step, index) => starts[index] - origin + (step.durationMs ?? 0)));
  return (
    <div className="build">
      <p>#{data.number} {data.transition}: <Status value={data.state} /> {data.error && <span className="problem-text">{data.error}</span>}</p>
      {data.steps.length > 0 && (
        <ol className="timeline" aria-label="Build steps">
          {data.steps.map((step, index) => (
            <li key={`${step.name}-${index}`}>
              <span className="step-name">{step.name}</span>
              <span className="track" aria-hidden="true">
                <span className="bar" data-state={step.state}
                  style={{ marginLeft: `${((starts[index] - origin) / span) * 100}%`, width: `${Math.max(0.5, ((step.durationMs ?? 0) / span) * 100)}%` }} />
              </span>
              <span>{step.durationMs === undefined ? step.state : `${formatMs(step.durationMs)} ${step.state === 'succeeded' ? '' : step.state}`}</span>
            </li>
          ))}
        </ol>
      )}
      <pre className="log" data-testid="build-log" tabIndex={0} aria-label={`Log of build ${data.number}`}>
        {lines.items.map((line) => `${line.step ? `[${line.step}] ` : ''}${line.line}\n`).join('')}
      </pre>
      {lines.error && <p className="problem-text">{lines.error}</p>}
    </div>
  );
}

interface TerminalTabs {
  tabs: { key: number; service?: string; sessionId?: string }[];
  active: number;
  /** a new tab with a shell in the workspace, or beside `service` */
  open(service?: string): void;
  select(key: number): void;
  close(key: number): void;
  session(key: number, sessionId: string): void;
}

/** The terminal tabs of the workspace page; the services table opens tabs too (a shell beside a service). */
function useTerminalTabs(): TerminalTabs {
  const [tabs, setTabs] = useState<TerminalTabs['tabs']>([]);
  const [active, setActive] = useState(0);
  const [next, setNext] = useState(1);
  return {
    tabs,
    active,
    open(service) {
      setTabs((previous) => [...previous, { key: next, service }]);
      setActive(next);
      setNext(next + 1);
    },
    select: setActive,
    close: (key) => setTabs((previous) => previous.filter((entry) => entry.key !== key)),
    session: (key, sessionId) => setTabs((previous) => previous.map((entry) => (entry.key === key ? { ...entry, sessionId } : entry))),
  };
}

function Terminals({ owner, name, tabs }: { owner: string; name: string; tabs: TerminalTabs }) {
  const label = (tab: TerminalTabs['tabs'][number], index: number) => `Terminal ${index + 1}${tab.service ? ` (${tab.service})` : ''}`;
  const activeIndex = tabs.tabs.findIndex((tab) => tab.key === tabs.active);
  return (
    <section aria-labelledby="terminals-title">
      <div className="heading">
        <h2 id="terminals-title">Terminals</h2>
        <button onClick={() => tabs.open()}>Open a terminal</button>
        <a href={`/@${encodeURIComponent(owner)}/${encodeURIComponent(name)}/terminal`} target="_blank" rel="noopener">Open in a new window</a>
      </div>
      {tabs.tabs.length > 0 && (
        <>
          <div className="tab-bar">
            {/* a tablist holds tabs only (axe: aria-required-children); closing is a button beside it, for the tab shown */}
            <div role="tablist" aria-label="Terminal tabs">
              {tabs.tabs.map((tab, index) => (
                <button key={tab.key} role="tab" aria-selected={tab.key === tabs.active} onClick={() => tabs.select(tab.key)}>{label(tab, index)}</button>
              ))}
            </div>
            {activeIndex >= 0 && (
              <button className="link" onClick={() => tabs.close(tabs.active)}>Close {label(tabs.tabs[activeIndex], activeIndex).toLowerCase()}</button>
            )}
          </div>
          <Suspense fallback={<p role="status">Loading the terminal…</p>}>
            {tabs.tabs.map((tab) => (
              <TerminalTab key={tab.key} owner={owner} name={name} service={tab.service} sessionId={tab.sessionId} visible={tab.key === tabs.active}
                onSessionId={(id) => tabs.session(tab.key, id)} />
            ))}
          </Suspense>
        </>
      )}
    </section>
  );
}

/** How often the page asks again which ports listen (each ask reads /proc/net/tcp* in the workspace). */
const PORTS_REFRESH_MS = 10_000;

const HEALTH_CLASS = { healthy: 'ok', unhealthy: 'bad', unknown: 'idle' } as const;

/** The workspace's apps (with the environment services' previews and each app's health) and the ports listening in it, each with its URL through den (docs/apps.md). */
function Apps({ owner, name, running }: { owner: string; name: string; running: boolean }) {
  const listing = useQuery({
    queryKey: ['ports', owner, name],
    queryFn: () => den().workspaces.ports(owner, name),
    refetchInterval: running ? PORTS_REFRESH_MS : false,
  });
  if (!listing.data) return null;
  const { apps, ports, detected } = listing.data;
  return (
    <section aria-labelledby="apps-title">
      <h2 id="apps-title">Apps and ports</h2>
      {apps.length > 0 && (
        <ul data-testid="apps">{apps.map((app) => (
          <li key={app.name}>
            <a href={app.url} target="_blank" rel="noopener">{app.displayName ?? app.name}</a>
            {' '}({app.service ? `preview of service ${app.service}, port ${app.port}` : `port ${app.port}`}, shared with {app.share})
            {app.health && <> <span className={`status ${HEALTH_CLASS[app.health.state]}`} title={app.health.message}>{app.health.state === 'unknown' ? 'health unknown' : app.health.state}</span>{app.health.message ? `: ${app.health.message}` : ''}</>}
          </li>
        ))}</ul>
      )}
      {!detected ? <p>The listening ports are shown while the workspace's agent is connected.</p> : ports.length === 0 ? <p>Nothing listens on a TCP port in the workspace.</p> : (
        <table className="list">
          <thead><tr><th scope="col">Port</th><th scope="col">Address</th><th scope="col">Shared with</th><th scope="col">Open</th></tr></thead>
          <tbody>
            {ports.map((port) => (
              <tr key={`${port.address} ${port.port}`}>
                <th scope="row">{port.port}{port.app ? ` (${port.app})` : ''}</th>
                <td><code>{port.address}</code></td>
                <td>{port.share}</td>
                <td><a href={port.url} target="_blank" rel="noopener">{port.url}</a></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

function Services({ owner, name, services, agents, onTerminal }: {
  owner: string;
  name: string;
  services: ServiceStatusDto[];
  agents: AgentDto[];
  /** opens a terminal tab beside a service (only while the workspace runs) */
  onTerminal?(service: string): void;
}) {
  const [shown, setShown] = useState<string>();
  return (
    <section aria-labelledby="services-title">
      <h2 id="services-title">Environment services</h2>
      <table className="list" data-testid="services">
        <thead><tr><th scope="col">Service</th><th scope="col">State</th><th scope="col">Ports</th><th scope="col">Actions</th></tr></thead>
        <tbody>
          {services.map((service) => {
            const agent = agents.find((entry) => entry.service === service.name);
            return (
              <tr key={service.name} data-service={service.name}>
                <th scope="row">{service.name}</th>
                <td><ServiceState service={service} /></td>
                <td>{service.ports.map((port) => `${port.port}${port.name ? ` (${port.name})` : ''}${port.address ? ` at ${port.address}` : ''}`).join(', ') || '—'}</td>
                <td className="actions">
                  <button onClick={() => setShown(shown === service.name ? undefined : service.name)} aria-expanded={shown === service.name}>
                    {shown === service.name ? 'Hide' : 'Show'} the log of {service.name}
                  </button>
                  {service.agent && onTerminal && (
                    <button onClick={() => onTerminal(service.name)} disabled={!agent?.connected}
                      title={agent?.connected ? undefined : 'Its agent is not connected.'}>Open a terminal in {service.name}</button>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {shown && <ServiceLog key={shown} owner={owner} name={name} service={shown} />}
    </section>
  );
}

/** The workspace's agents: its own ('main') and one beside each service that asks for it. */
function Agents({ agents }: { agents: AgentDto[] }) {
  return (
    <section aria-labelledby="agents-title">
      <h2 id="agents-title">Agents</h2>
      <table className="list" data-testid="agents">
        <thead><tr><th scope="col">Agent</th><th scope="col">Runs</th><th scope="col">State</th><th scope="col">Connection</th></tr></thead>
        <tbody>
          {agents.map((agent) => (
            <tr key={agent.name} data-agent={agent.name}>
              <th scope="row">{agent.name}</th>
              <td>{agent.service ? `beside service ${agent.service}` : 'in the workspace'}</td>
              <td><Status value={agent.state ?? 'unknown'} /></td>
              <td>{agent.connected ? <>connected <Age at={agent.connectedAt} /></> : <>not connected{agent.disconnectedAt && <> since <Age at={agent.disconnectedAt} /></>}</>}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function ServiceLog({ owner, name, service }: { owner: string; name: string; service: string }) {
  const lines = useStream<ServiceLogLine>((signal) => den().workspaces.serviceLogs(owner, name, service, { tail: 500, follow: true, signal }), [owner, name, service]);
  return (
    <>
      <pre className="log" data-testid="service-log" tabIndex={0} aria-label={`Log of the service ${service}`}>
        {lines.items.map((line) => `${line.line}\n`).join('')}
      </pre>
      {lines.error && <p className="problem-text">{lines.error}</p>}
    </>
  );
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}
