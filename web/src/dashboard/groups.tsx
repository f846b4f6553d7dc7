import { useState, type FormEvent } from 'react';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import type { GroupSummaryDto } from '../../../protocol/groups.ts';
import { den } from './api.ts';
import { ActionButton, RequestError } from './ui.tsx';

/**
 * Owners: the groups of users, which a workspace's owner may grant the environment's read-only
 * view (docs/groups.md). Members are read at each request, so a removal takes effect at once.
 */
export function Groups() {
  const groups = useQuery({ queryKey: ['groups'], queryFn: () => den().groups.list() });
  const list = groups.data?.groups ?? [];
  return (
    <section aria-labelledby="groups-title">
      <h2 id="groups-title">Groups</h2>
      <p>A workspace's owner may let a group see the workspace's environment read-only. Whoever is in the group at the time sees it: removing someone ends their access at once.</p>
      <RequestError error={groups.error} />
      {list.length === 0 ? <p>There are no groups yet.</p> : (
        <table className="list" data-testid="groups">
          <thead><tr><th scope="col">Group</th><th scope="col">Members</th><th scope="col">Add a member</th><th scope="col"><span className="visually-hidden">Actions</span></th></tr></thead>
          <tbody>{list.map((group) => <GroupRow key={group.name} group={group} />)}</tbody>
        </table>
      )}
      <CreateGroup />
    </section>
  );
}

function GroupRow({ group }: { group: GroupSummaryDto }) {
  const queries = useQueryClient();
  const detail = useQuery({ queryKey: ['groups', group.name], queryFn: () => den().groups.get(group.name) });
  const users = useQuery({ queryKey: ['users'], queryFn: () => den().listUsers() });
  const [adding, setAdding] = useState('');
  const refresh = () => queries.invalidateQueries({ queryKey: ['groups'] });
  const change = useMutation({
    mutationFn: async (input: { add?: string; remove?: string; delete?: true }): Promise<void> => {
      if (input.add) await den().groups.addMember(group.name, input.add);
      else if (input.remove) await den().groups.removeMember(group.name, input.remove);
      else await den().groups.delete(group.name);
    },
    onSuccess: async () => {
      setAdding('');
      await refresh();
    },
  });
  const members = detail.data?.members ?? [];
  const candidates = (users.data?.users ?? []).filter((user) => !members.some((member) => member.user === user.username));
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (adding) change.mutate({ add: adding });
  };
  return (
    <tr data-group={group.name}>
      <th scope="row">{group.name}{group.description && <> <small>{group.description}</small></>}</th>
      <td>
        {members.length === 0 ? 'none' : (
          <ul className="members">
            {members.map((member) => (
              <li key={member.user}>
                {member.user} <button className="link" onClick={() => change.mutate({ remove: member.user })} disabled={change.isPending}>Remove {member.user} from {group.name}</button>
              </li>
            ))}
          </ul>
        )}
        <RequestError error={detail.error ?? change.error} />
      </td>
      <td>
        <form className="row" onSubmit={submit}>
          <select aria-label={`User to add to ${group.name}`} value={adding} onChange={(event) => setAdding(event.target.value)}>
            <option value="">choose a user</option>
            {candidates.map((user) => <option key={user.id} value={user.username}>{user.username}</option>)}
          </select>
          <button type="submit" disabled={!adding || change.isPending}>Add to {group.name}</button>
        </form>
      </td>
      <td>
        <ActionButton label={`Delete group ${group.name}`} danger onAction={() => change.mutate({ delete: true })}
          confirm={`Its members lose every environment they saw through it, at once. Its history stays (den groups history ${group.name}).`} />
      </td>
    </tr>
  );
}

function CreateGroup() {
  const queries = useQueryClient();
  const [form, setForm] = useState({ name: '', description: '' });
  const create = useMutation({
    mutationFn: () => den().groups.create({ name: form.name, ...(form.description ? { description: form.description } : {}) }),
    onSuccess: async () => {
      setForm({ name: '', description: '' });
      await queries.invalidateQueries({ queryKey: ['groups'] });
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    create.mutate();
  };
  return (
    <form className="card wide" onSubmit={submit} aria-labelledby="new-group-title">
      <h2 id="new-group-title">Create a group</h2>
      <label>Group name <input value={form.name} onChange={(event) => setForm({ ...form, name: event.target.value })} required maxLength={32} pattern="[a-z0-9]([a-z0-9\-]*[a-z0-9])?" title="lowercase letters, digits and inner dashes" autoCapitalize="none" /></label>
      <label>Description (optional) <input value={form.description} onChange={(event) => setForm({ ...form, description: event.target.value })} maxLength={200} /></label>
      <button type="submit" className="primary" disabled={create.isPending}>Create group</button>
      <RequestError error={create.error} />
    </form>
  );
}
