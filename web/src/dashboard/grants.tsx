import { useState, type FormEvent } from 'react';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { Link } from 'wouter';
import type { EnvironmentGrantDto } from '../../../protocol/environments.ts';
import { den, fetchSession } from './api.ts';
import { RequestError, Status, usePageTitle, Age } from './ui.tsx';

/** The teammates of a workspace's environment (its owner's view): grant a user or a group, revoke. */
export function Grants({ owner, name }: { owner: string; name: string }) {
  const queries = useQueryClient();
  const grants = useQuery({ queryKey: ['environment-grants', owner, name], queryFn: () => den().environments.grants(owner, name) });
  // den's owner role sees another user's grants but may not change them (as with shares)
  const session = useQuery({ queryKey: ['session'], queryFn: fetchSession, staleTime: 60_000 });
  const mayChange = session.data?.username === owner;
  const groups = useQuery({ queryKey: ['groups'], queryFn: () => den().groups.list(), staleTime: 60_000 });
  const [kind, setKind] = useState<'user' | 'group'>('user');
  const [subject, setSubject] = useState('');
  const refresh = () => queries.invalidateQueries({ queryKey: ['environment-grants', owner, name] });
  const grant = useMutation({
    mutationFn: (input: { kind: 'user' | 'group'; subject: string }) => (input.kind === 'group'
      ? den().environments.grantGroup(owner, name, input.subject)
      : den().environments.grant(owner, name, input.subject)),
    onSuccess: async () => {
      setSubject('');
      await refresh();
    },
  });
  const revoke = useMutation({
    mutationFn: (entry: EnvironmentGrantDto) => ('group' in entry
      ? den().environments.revokeGroup(owner, name, entry.group)
      : den().environments.revoke(owner, name, entry.user)),
    onSuccess: refresh,
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (subject.trim()) grant.mutate({ kind, subject: subject.trim() });
  };
  const list = grants.data?.grants ?? [];
  return (
    <>
      <h2 id="env-grants-title">Teammates</h2>
      <p>Teammates see this environment read-only: its services, sync, tasks and tests, logs and preview URLs; never its terminals, files or secrets. Each of their views is among the workspace's events.</p>
      <RequestError error={grants.error} />
      {list.length === 0 ? <p data-testid="env-grants-empty">Nobody else may see this environment.</p> : (
        <table className="list" data-testid="env-grants" aria-labelledby="env-grants-title">
          <thead><tr><th scope="col">Teammate</th><th scope="col">Granted</th>{mayChange && <th scope="col">Revoke</th>}</tr></thead>
          <tbody>
            {list.map((entry) => {
              const label = 'group' in entry ? `group ${entry.group}` : entry.user;
              return (
                <tr key={label} data-grant={label}>
                  <th scope="row">{label}</th>
                  <td><Age at={entry.createdAt} /> by {entry.grantedBy}</td>
                  {mayChange && <td><button className="danger" onClick={() => revoke.mutate(entry)} disabled={revoke.isPending}>Revoke {label}</button></td>}
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <RequestError error={revoke.error} />
      {!mayChange ? <p>Only {owner} decides who sees this environment.</p> : (
        <form className="row" onSubmit={submit} aria-label="Grant the environment">
          <label>Grant to
            <select value={kind} onChange={(event) => setKind(event.target.value as 'user' | 'group')}>
              <option value="user">a user</option>
              <option value="group">a group</option>
            </select>
          </label>
          <label>{kind === 'user' ? 'Username' : 'Group'}
            <input value={subject} onChange={(event) => setSubject(event.target.value)} list={kind === 'group' ? 'env-grant-groups' : undefined} required autoComplete="off" />
          </label>
          <datalist id="env-grant-groups">{(groups.data?.groups ?? []).map((group) => <option key={group.name} value={group.name} />)}</datalist>
          <button type="submit" className="primary" disabled={grant.isPending}>Grant</button>
        </form>
      )}
      <RequestError error={grant.error} />
    </>
  );
}

/** /shared: the environments others let the signed-in user see, directly or through a group. */
export function SharedWithMe() {
  usePageTitle('Shared with me');
  const shared = useQuery({ queryKey: ['environments-shared'], queryFn: () => den().environments.shared() });
  const list = shared.data?.environments ?? [];
  return (
    <section aria-labelledby="shared-title">
      <h1 id="shared-title">Shared with me</h1>
      <p>Environments of other people's workspaces that you may see read-only.</p>
      <RequestError error={shared.error} />
      {shared.isPending ? <p role="status">Loading…</p> : list.length === 0 ? <p>Nobody has shared an environment with you yet.</p> : (
        <table className="list" data-testid="shared">
          <thead><tr><th scope="col">Workspace</th><th scope="col">Status</th><th scope="col">Through</th></tr></thead>
          <tbody>
            {list.map((entry) => (
              <tr key={entry.workspace}>
                <th scope="row"><Link href={`/@${encodeURIComponent(entry.owner)}/${encodeURIComponent(entry.name)}/env`}>{entry.workspace}</Link></th>
                <td><Status value={entry.status} /></td>
                <td>{[...(entry.direct ? ['you'] : []), ...entry.groups.map((group) => `group ${group}`)].join(', ')}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
