import { useMemo, useState } from 'react';
import { useQuery } from '@tanstack/react-query';
import { Link } from 'wouter';
import type { WorkspaceDto } from '../../../protocol/workspaces.ts';
import { den, type Me } from './api.ts';
import { Age, RequestError, Status, usePageTitle } from './ui.tsx';

/** the server's page size limit; the list asks for this many and says when there are more */
const PAGE = 500;

/** The workspaces the user may see (all of them for an owner), live through the event stream. */
export function WorkspaceList({ me }: { me: Me }) {
  usePageTitle('Workspaces');
  const [all, setAll] = useState(false);
  const [search, setSearch] = useState('');
  const [status, setStatus] = useState('');
  const list = useQuery({
    queryKey: ['workspaces', { all }],
    queryFn: () => den().workspaces.list({ all: all || undefined, limit: PAGE }),
  });
  const shown = useMemo(() => filter(list.data?.workspaces ?? [], search, status), [list.data, search, status]);
  return (
    <section aria-labelledby="workspaces-title">
      <div className="heading">
        <h1 id="workspaces-title">Workspaces</h1>
        <Link href="/workspaces/new" className="button primary">New workspace</Link>
      </div>
      <div className="filters" role="search">
        <label>Search <input type="search" value={search} onChange={(event) => setSearch(event.target.value)} placeholder="name, owner or template" /></label>
        <label>Status
          <select value={status} onChange={(event) => setStatus(event.target.value)}>
            <option value="">any</option>
            {['running', 'starting', 'stopped', 'failed', 'pending', 'stopping', 'deleting'].map((value) => <option key={value}>{value}</option>)}
          </select>
        </label>
        {me.role === 'owner' && (
          <label className="inline"><input type="checkbox" checked={all} onChange={(event) => setAll(event.target.checked)} /> Everyone's workspaces</label>
        )}
      </div>
      <RequestError error={list.error} />
      {list.isPending ? <p role="status">Loading workspaces…</p> : (
        <table className="list" data-testid="workspaces">
          <caption className="visually-hidden">Workspaces ({shown.length} shown of {list.data?.total ?? 0})</caption>
          <thead>
            <tr><th scope="col">Name</th><th scope="col">Template</th><th scope="col">Status</th><th scope="col">Last activity</th><th scope="col">Update</th></tr>
          </thead>
          <tbody>
            {shown.map((workspace) => <Row key={workspace.id} workspace={workspace} showOwner={all} />)}
            {shown.length === 0 && (
              <tr><td colSpan={5}>{list.data?.total ? 'No workspace matches the filter.' : <>No workspaces yet. <Link href="/workspaces/new">Create one</Link> from a template.</>}</td></tr>
            )}
          </tbody>
        </table>
      )}
      {list.data && list.data.total > list.data.workspaces.length && <p>Showing the first {list.data.workspaces.length} of {list.data.total}; narrow the search with the CLI (`den list`).</p>}
    </section>
  );
}

function Row({ workspace, showOwner }: { workspace: WorkspaceDto; showOwner: boolean }) {
  const href = `/@${encodeURIComponent(workspace.owner)}/${encodeURIComponent(workspace.name)}`;
  return (
    <tr>
      <td><Link href={href}>{showOwner ? `${workspace.owner}/` : ''}{workspace.name}</Link></td>
      <td>{workspace.template} <small>v{workspace.templateVersion}</small></td>
      <td><Status value={workspace.status} />{workspace.health?.state === 'down' && <span className="status bad" title={workspace.health.message}>down</span>}</td>
      <td><Age at={workspace.latestBuild?.createdAt ?? workspace.updatedAt} /></td>
      <td>{workspace.outdated ? <span className="status busy" title="A newer template version is active">update available</span> : ''}</td>
    </tr>
  );
}

function filter(workspaces: WorkspaceDto[], search: string, status: string): WorkspaceDto[] {
  const needle = search.trim().toLowerCase();
  return workspaces.filter((workspace) =>
    (!status || workspace.status === status) &&
    (!needle || `${workspace.owner}/${workspace.name} ${workspace.template}`.toLowerCase().includes(needle)));
}
