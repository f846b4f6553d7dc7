import { useState, type FormEvent } from 'react';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import type { UpdateUserRequest, UserDto } from '../../../protocol/users.ts';
import { den, type Me } from './api.ts';
import { ActionButton, Age, RequestError, usePageTitle } from './ui.tsx';

const ROLES = ['member', 'template-admin', 'owner'] as const;

/** Owners: the users, a form to add one, role changes and suspension (confirmed). */
export function Users({ me }: { me: Me }) {
  usePageTitle('Users');
  const queries = useQueryClient();
  const users = useQuery({ queryKey: ['users'], queryFn: () => den().listUsers() });
  const update = useMutation({
    mutationFn: ({ username, body }: { username: string; body: UpdateUserRequest }) => den().updateUser(username, body),
    onSuccess: () => queries.invalidateQueries({ queryKey: ['users'] }),
  });
  return (
    <section aria-labelledby="users-title">
      <h1 id="users-title">Users</h1>
      <RequestError error={users.error ?? update.error} />
      <table className="list">
        <thead><tr><th scope="col">User</th><th scope="col">Role</th><th scope="col">State</th><th scope="col">Created</th><th scope="col"><span className="visually-hidden">Actions</span></th></tr></thead>
        <tbody>
          {(users.data?.users ?? []).map((user) => (
            <tr key={user.id}>
              <td>{user.username} <small>{user.displayName}</small></td>
              <td>
                <select aria-label={`Role of ${user.username}`} value={user.role} disabled={user.id === me.id || update.isPending}
                  onChange={(event) => update.mutate({ username: user.username, body: { role: event.target.value as UserDto['role'] } })}>
                  {ROLES.map((role) => <option key={role}>{role}</option>)}
                </select>
              </td>
              <td>{user.suspended ? 'suspended' : 'active'}</td>
              <td><Age at={user.createdAt} /></td>
              <td>
                {user.id !== me.id && (user.suspended
                  ? <button onClick={() => update.mutate({ username: user.username, body: { suspended: false } })}>Reactivate {user.username}</button>
                  : <ActionButton label={`Suspend ${user.username}`} danger confirm={`${user.username} is signed out everywhere and cannot sign in or use API tokens until reactivated. Their workspaces keep running.`}
                      onAction={() => update.mutate({ username: user.username, body: { suspended: true } })} />)}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <CreateUser />
    </section>
  );
}

function CreateUser() {
  const queries = useQueryClient();
  const [form, setForm] = useState({ username: '', displayName: '', password: '', role: 'member' as UserDto['role'] });
  const create = useMutation({
    mutationFn: () => den().createUser({ username: form.username, password: form.password, role: form.role, displayName: form.displayName || undefined }),
    onSuccess: async () => {
      setForm({ username: '', displayName: '', password: '', role: 'member' });
      await queries.invalidateQueries({ queryKey: ['users'] });
    },
  });
  const submit = (event: FormEvent) => {
    event.preventDefault();
    create.mutate();
  };
  const set = (key: keyof typeof form) => (event: { target: { value: string } }) => setForm({ ...form, [key]: event.target.value });
  return (
    <form className="card wide" onSubmit={submit} aria-labelledby="new-user-title">
      <h2 id="new-user-title">Add a user</h2>
      <label>Username <input value={form.username} onChange={set('username')} required maxLength={32} pattern="[a-z0-9]([a-z0-9\-]*[a-z0-9])?" title="lowercase letters, digits and inner dashes" autoCapitalize="none" /></label>
      <label>Display name (optional) <input value={form.displayName} onChange={set('displayName')} maxLength={128} /></label>
      <label>Password <input type="password" value={form.password} onChange={set('password')} required minLength={8} autoComplete="new-password" /></label>
      <label>Role <select value={form.role} onChange={set('role')}>{ROLES.map((role) => <option key={role}>{role}</option>)}</select></label>
      <button type="submit" className="primary" disabled={create.isPending}>Add user</button>
      {create.isSuccess && <p role="status" className="ok-text">User added.</p>}
      <RequestError error={create.error} />
    </form>
  );
}
