import { useId, useRef, useState, type FormEvent } from 'react';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import type { UpdateUserRequest, UserDto } from '../../../protocol/users.ts';
import { den, type Me } from './api.ts';
import { Groups } from './groups.tsx';
import { ActionButton, Age, RequestError, usePageTitle } from './ui.tsx';

const ROLES = ['member', 'template-admin', 'owner'] as const;

/** Owners: the users, a form to add one, role changes and suspension (confirmed), and the groups. */
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
                <RoleSelect user={user} disabled={user.id === me.id || update.isPending} onChange={(role) => update.mutate({ username: user.username, body: { role } })} />
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
      <Groups />
    </section>
  );
}

/** A role change is confirmed first: it widens or narrows what the user may do at once. */
function RoleSelect({ user, disabled, onChange }: { user: UserDto; disabled: boolean; onChange(role: UserDto['role']): void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  const [pending, setPending] = useState<UserDto['role']>();
  return (
    <>
      <select aria-label={`Role of ${user.username}`} value={user.role} disabled={disabled}
        onChange={(event) => { setPending(event.target.value as UserDto['role']); dialog.current?.showModal(); }}>
        {ROLES.map((role) => <option key={role}>{role}</option>)}
      </select>
      <dialog ref={dialog} aria-labelledby={titleId} onClose={() => setPending(undefined)}>
        <form method="dialog">
          <h2 id={titleId}>Make {user.username} {pending}?</h2>
          <p>{ROLE_MEANS[pending ?? 'member']} It applies at once, to open sessions too.</p>
          <div className="row">
            <button value="cancel" autoFocus>Cancel</button>
            <button value="ok" onClick={() => pending && onChange(pending)}>Change the role</button>
          </div>
        </form>
      </dialog>
    </>
  );
}

const ROLE_MEANS: Record<UserDto['role'], string> = {
  member: 'A member uses their own workspaces only.',
  'template-admin': 'A template admin also pushes and activates templates.',
  owner: 'An owner can do everything, including managing users and every workspace.',
};

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
