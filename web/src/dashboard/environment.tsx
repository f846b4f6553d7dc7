import { useEffect, useState } from 'react';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { Link } from 'wouter';
import type { EnvironmentLogLine, EnvironmentRunDto, EnvironmentViewDto, RunStreamLine } from '../../../protocol/environments.ts';
import type { SyncStatus } from '../../../protocol/sync.ts';
import { den } from './api.ts';
import { Grants } from './grants.tsx';
import { useStream } from './stream.ts';
import { Age, NotFound, RequestError, ServiceState, Status, usePageTitle } from './ui.tsx';

/** How often the owner's page asks again what each sync is doing (its state is not on the event stream). */
const SYNC_REFRESH_MS = 3_000;

/**
 * /@owner/name/env: the environment of a workspace, for its owner and for a teammate with a
 * grant (directly or through a group). Everything here is read-only for a teammate and comes
 * from the routes that accept one (GET .../env, .../env/logs, .../sync), each view audited
 * among the workspace's events: so a teammate's page asks only when opened or refreshed, never
 * on a timer. Nothing of the terminal, files or secrets is here; someone without a grant gets
 * the not-found page, as for a workspace that does not exist.
 */
export function EnvironmentPage({ owner, name }: { owner: string; name: string }) {
  usePageTitle(`Environment of ${owner}/${name}`);
  return <EnvironmentSection owner={owner} name={name} />;
}

/** The environment's view; `embedded` on the owner's workspace page, which shows the services and their logs itself. */
export function EnvironmentSection({ owner, name, embedded }: { owner: string; name: string; embedded?: boolean }) {
  const view = useQuery({ queryKey: ['environment', owner, name], queryFn: () => den().environments.view(owner, name) });
  if (view.isPending) return <p role="status">Loading the environment of {owner}/{name}…</p>;
  if (view.error) {
    if ((view.error as { status?: number }).status === 404 && !embedded) return <NotFound what={`There is no environment of ${owner}/${name} that you can see.`} />;
    return <RequestError error={view.error} />;
  }
  return <Loaded owner={owner} name={name} view={view.data} embedded={embedded ?? false} />;
}

function Loaded({ owner, name, view, embedded }: { owner: string; name: string; view: EnvironmentViewDto; embedded: boolean }) {
  const queries = useQueryClient();
  const teammate = view.viewer === 'teammate';
  const running = view.status === 'running';
  const sync = useQuery({
    queryKey: ['sync', owner, name],
    queryFn: () => den().workspaces.syncStatus(owner, name),
    refetchInterval: !teammate && running ? SYNC_REFRESH_MS : false,
  });
  const Title = embedded ? 'h2' : 'h1';
  return (
    <section aria-labelledby="environment-title" data-testid="environment">
      <div className="heading">
        <Title id="environment-title">{embedded ? 'Environment' : <>Environment of {view.workspace}</>}</Title>
        {!embedded && <Status value={view.status} />}
        {teammate && <span className="tag" data-testid="read-only">read-only: you are a teammate</span>}
        {teammate && (
          <button onClick={() => void Promise.all([queries.invalidateQueries({ queryKey: ['environment', owner, name] }), queries.invalidateQueries({ queryKey: ['sync', owner, name] })])}>
            Refresh
          </button>
        )}
        {embedded && <Link href={`/@${encodeURIComponent(owner)}/${encodeURIComponent(name)}/env`}>The environment's own page</Link>}
      </div>
      {teammate && <p>You see this environment because its owner, {owner}, granted it to you or to a group you are in. Each view is recorded for {owner}.</p>}
      {!embedded && <ServicesTable view={view} />}
      {!embedded && <Previews view={view} />}
      <SyncTable items={sync.data?.items} error={sync.error} running={running} />
      <Entries title="Tasks" kind="task" entries={view.tasks} run={teammate || !running ? undefined : { owner, name }} />
      <Entries title="Tests" kind="test" entries={view.tests} run={teammate || !running ? undefined : { owner, name }} />
      {!teammate && <RunHistory owner={owner} name={name} />}
      {!embedded && view.services.length > 0 && <MergedLogs owner={owner} name={name} />}
      {!teammate && <Grants owner={owner} name={name} />}
    </section>
  );
}

function ServicesTable({ view }: { view: EnvironmentViewDto }) {
  return (
    <>
      <h2 id="env-services-title">Services</h2>
      {view.services.length === 0 ? <p>The template declares no environment services.</p> : (
        <table className="list" data-testid="env-services" aria-labelledby="env-services-title">
          <thead><tr><th scope="col">Service</th><th scope="col">State</th><th scope="col">Ports</th><th scope="col">Version</th><th scope="col">Preview</th></tr></thead>
          <tbody>
            {view.services.map((service) => {
              const previews = view.apps.filter((app) => app.service === service.name);
              return (
                <tr key={service.name} data-service={service.name}>
                  <th scope="row">{service.name}</th>
                  <td><ServiceState service={service} /></td>
                  <td>{service.ports.map((port) => `${port.port}${port.name ? ` (${port.name})` : ''}`).join(', ') || '—'}</td>
                  <td><code>{service.version ?? '—'}</code></td>
                  <td>{previews.length === 0 ? '—' : previews.map((app) => <a key={app.name} href={app.url} target="_blank" rel="noopener">{app.name}</a>)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </>
  );
}

/** The workspace's own apps (the services' previews are in the services table); who may open one is its share level. */
function Previews({ view }: { view: EnvironmentViewDto }) {
  const apps = view.apps.filter((app) => !app.service);
  if (apps.length === 0) return null;
  return (
    <>
      <h2>Apps</h2>
      <ul data-testid="env-apps">{apps.map((app) => <li key={app.name}><a href={app.url} target="_blank" rel="noopener">{app.name}</a> (port {app.port})</li>)}</ul>
    </>
  );
}

function SyncTable({ items, error, running }: { items: SyncStatus[] | undefined; error: unknown; running: boolean }) {
  return (
    <>
      <h2 id="env-sync-title">Sync</h2>
      <RequestError error={error} />
      {!items ? null : items.length === 0 ? <p>{running ? 'Nothing syncs into the services.' : 'Syncs run while the workspace runs.'}</p> : (
        <table className="list" data-testid="env-sync" aria-labelledby="env-sync-title">
          <thead><tr><th scope="col">Service</th><th scope="col">From → to</th><th scope="col">State</th><th scope="col">Pending</th><th scope="col">Last change</th><th scope="col">Hashes</th></tr></thead>
          <tbody>
            {items.map((item) => (
              <tr key={`${item.service} ${item.to}`} data-service={item.service}>
                <th scope="row">{item.service}</th>
                <td><code>{item.from}</code> → <code>{item.to}</code></td>
                <td>
                  <Status value={item.state} />{item.watchMode === 'scan' && <span className="tag" title={item.watchMessage ?? undefined}>scanning</span>}
                  {item.lastError && <p className="problem-text">{item.lastError}</p>}
                </td>
                <td>{item.pendingFiles}</td>
                <td>{item.lastApplied ? <>{item.lastApplied.files} files in {Math.round(item.lastApplied.latencyMs)} ms, <Age at={item.lastApplied.at} /></> : '—'}</td>
                <td>
                  {item.inSync ? <span className="ok-text">equal</span> : <span className="problem-text">differ</span>}{' '}
                  <code title="the workspace's hash">{short(item.sourceHash)}</code> / <code title="the service's hash">{short(item.targetHash)}</code>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

/** Tasks or tests with their latest runs; `run` (the owner, while the workspace runs): a button per entry that runs it now. */
function Entries({ title, kind, entries, run }: { title: string; kind: 'task' | 'test'; entries: EnvironmentViewDto['tasks']; run?: { owner: string; name: string } }) {
  // the run shown below the table (kept after it ends); n: a fresh run of the same entry each click
  const [shown, setShown] = useState<{ entry: string; n: number }>();
  const [busy, setBusy] = useState(false);
  if (entries.length === 0) return null;
  return (
    <>
      <h2 id={`env-${kind}s-title`}>{title}</h2>
      <table className="list" data-testid={`env-${kind}s`} aria-labelledby={`env-${kind}s-title`}>
        <thead>
          <tr>
            <th scope="col">{kind === 'task' ? 'Task' : 'Test'}</th><th scope="col">Service</th><th scope="col">Last run</th><th scope="col">Version</th><th scope="col">When</th>
            {run && <th scope="col"><span className="visually-hidden">Run</span></th>}
          </tr>
        </thead>
        <tbody>
          {entries.map((entry) => (
            <tr key={entry.name} data-entry={entry.name}>
              <th scope="row">{entry.name}</th>
              <td>{entry.service}</td>
              <td>{entry.lastRun ? <RunState run={entry.lastRun} /> : 'never run'}</td>
              <td><code>{entry.lastRun?.version ?? '—'}</code></td>
              <td>{entry.lastRun ? <><Age at={entry.lastRun.startedAt} /> {entry.lastRun.by ? `by ${entry.lastRun.by}` : `(${entry.lastRun.trigger})`}</> : '—'}</td>
              {run && (
                <td>
                  <button disabled={busy} onClick={() => { setShown({ entry: entry.name, n: (shown?.n ?? 0) + 1 }); setBusy(true); }}>Run {entry.name}</button>
                </td>
              )}
            </tr>
          ))}
        </tbody>
      </table>
      {run && shown && <RunNow key={shown.n} owner={run.owner} name={run.name} kind={kind} entry={shown.entry} onDone={() => setBusy(false)} />}
    </>
  );
}

/**
 * One run of a task or test, its output as it comes and then its result: a test whose passed
 * result of the same version is kept answers at once as cached (`den test --force` runs anyway).
 */
function RunNow({ owner, name, kind, entry, onDone }: { owner: string; name: string; kind: 'task' | 'test'; entry: string; onDone(): void }) {
  const queries = useQueryClient();
  const lines = useStream<RunStreamLine>((signal) => den().environments.run(owner, name, kind, entry, { signal }), [owner, name, kind, entry]);
  const result = lines.items.find((line): line is Extract<RunStreamLine, { type: 'result' }> => line.type === 'result');
  const finished = result !== undefined || lines.error !== undefined;
  useEffect(() => {
    if (!finished) return;
    void queries.invalidateQueries({ queryKey: ['environment', owner, name] });
    void queries.invalidateQueries({ queryKey: ['environment-runs', owner, name] });
    onDone();
  }, [finished]);
  const output = lines.items.filter((line) => line.type === 'output').map((line) => `${line.line}\n`).join('');
  return (
    <div data-testid="env-run-now">
      <p role="status">
        {kind} {entry}: {result ? <><RunState run={result.run} />{result.cached ? ' (cached: a passed run of this version is kept)' : ''}</> : lines.error ? 'did not finish' : 'running…'}
      </p>
      {output && <pre className="log" tabIndex={0} aria-label={`Output of the ${kind} ${entry}`}>{output}</pre>}
      {lines.error && <p className="problem-text" role="alert">{lines.error}</p>}
    </div>
  );
}

function RunState({ run }: { run: EnvironmentRunDto }) {
  return <><Status value={run.state} />{run.exitCode !== null && run.state === 'failed' ? ` exit ${run.exitCode}` : ''}</>;
}

/** The owner's history of task and test runs, each with the kept tail of its log on demand. */
function RunHistory({ owner, name }: { owner: string; name: string }) {
  const history = useQuery({ queryKey: ['environment-runs', owner, name], queryFn: () => den().environments.history(owner, name, { limit: 50 }) });
  const [shown, setShown] = useState<string>();
  const runs = history.data?.runs ?? [];
  if (runs.length === 0 && !history.error) return null;
  return (
    <>
      <h2 id="env-runs-title">Run history</h2>
      <RequestError error={history.error} />
      <table className="list" data-testid="env-runs" aria-labelledby="env-runs-title">
        <thead><tr><th scope="col">Run</th><th scope="col">Result</th><th scope="col">Version</th><th scope="col">When</th><th scope="col">Log</th></tr></thead>
        <tbody>
          {runs.map((run) => (
            <tr key={run.id}>
              <th scope="row">{run.kind} {run.name}</th>
              <td><RunState run={run} /></td>
              <td><code>{run.version}</code></td>
              <td><Age at={run.startedAt} /> {run.by ? `by ${run.by}` : `(${run.trigger})`}</td>
              <td><button className="link" aria-expanded={shown === run.id} onClick={() => setShown(shown === run.id ? undefined : run.id)}>{shown === run.id ? 'Hide' : 'Show'} the log of this {run.kind} run</button></td>
            </tr>
          ))}
        </tbody>
      </table>
      {shown && <RunLog owner={owner} name={name} id={shown} />}
    </>
  );
}

function RunLog({ owner, name, id }: { owner: string; name: string; id: string }) {
  const run = useQuery({ queryKey: ['environment-run', owner, name, id], queryFn: () => den().environments.runDetail(owner, name, id) });
  if (run.error) return <RequestError error={run.error} />;
  if (!run.data) return <p role="status">Loading the run's log…</p>;
  return <pre className="log" tabIndex={0} aria-label={`Log of the ${run.data.kind} ${run.data.name}`}>{run.data.log || '(no output)'}</pre>;
}

/** The services' logs as one stream, each line with its service: opened on request (a teammate's view of them is recorded). */
function MergedLogs({ owner, name }: { owner: string; name: string }) {
  const [open, setOpen] = useState(false);
  return (
    <>
      <div className="heading">
        <h2 id="env-logs-title">Logs</h2>
        <button aria-expanded={open} onClick={() => setOpen(!open)}>{open ? 'Stop following the logs' : 'Follow the services\' logs'}</button>
      </div>
      {open && <LogStream owner={owner} name={name} />}
    </>
  );
}

function LogStream({ owner, name }: { owner: string; name: string }) {
  const lines = useStream<EnvironmentLogLine>((signal) => den().environments.logs(owner, name, { tail: 200, follow: true, signal }), [owner, name]);
  const width = Math.max(0, ...lines.items.map((line) => line.service.length));
  return (
    <>
      <pre className="log" data-testid="env-logs" tabIndex={0} aria-labelledby="env-logs-title">
        {lines.items.map((line) => `${line.service.padEnd(width)} | ${line.line}\n`).join('')}
      </pre>
      {lines.error && <p className="problem-text" role="alert">{lines.error}</p>}
    </>
  );
}

function short(hash: string | null): string {
  return hash ? hash.slice(0, 12) : '—';
}
