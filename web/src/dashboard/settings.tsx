import { useState, type FormEvent } from 'react';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import type { CreatedTokenDto } from '../../../protocol/users.ts';
import { den } from './api.ts';
import { ActionButton, Age, RequestError, usePageTitle } from './ui.tsx';

/** The user's API tokens (for the CLI and scripts) and SSH keys. */
export function Settings() {
  usePageTitle('Settings');
  return (
    <>
      <h1>Settings</h1>
      <Tokens />
      <Keys />
    </>
  );
}

function Tokens() {
  const queries = useQueryClient();
  const tokens = useQuery({ queryKey: ['tokens'], queryFn: () => den().listTokens() });
  const [name, setName] = useState('');
  const [created, setCreated] = useState<CreatedTokenDto>();
  const create = useMutation({
    mutationFn: () => den().createToken({ name }),
    onSuccess: async (token) => {
      setCreated(token);
      setName('');
      await queries.invalidateQueries({ queryKey: ['tokens'] });
    },
  });
  const revoke = useMutation({ mutationFn: (id: string) => den().revokeToken(id), onSuccess: () => queries.invalidateQueries({ queryKey: ['tokens'] }) });
  return (
    <section aria-labelledby="tokens-title">
      <h2 id="tokens-title">API tokens</h2>
      <RequestError error={tokens.error ?? revoke.error} />
      <table className="list">
        <thead><tr><th scope="col">Name</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col">Expires</th><th scope="col"><span className="visually-hidden">Actions</span></th></tr></thead>
        <tbody>
          {(tokens.data?.tokens ?? []).map((token) => (
            <tr key={token.id}>
              <td>{token.name}</td><td><Age at={token.createdAt} /></td><td><Age at={token.lastUsedAt} /></td><td>{token.expiresAt ? new Date(token.expiresAt).toLocaleDateString() : 'never'}</td>
              <td><ActionButton label={`Revoke ${token.name}`} danger confirm="Programs using this token lose access at once." onAction={() => revoke.mutate(token.id)} /></td>
            </tr>
          ))}
        </tbody>
      </table>
      <form className="row" onSubmit={(event: FormEvent) => { event.preventDefault(); create.mutate(); }}>
        <label>Token name <input value={name} onChange={(event) => setName(event.target.value)} required maxLength={64} /></label>
        <button type="submit" disabled={create.isPending}>Create a token</button>
      </form>
      <RequestError error={create.error} />
      {created && (
        <p role="status" className="ok-text">
          Copy the token now, it is not shown again: <code data-testid="new-token">{created.token}</code>. Use it with <code>den login {location.origin} --token TOKEN</code>.
        </p>
      )}
    </section>
  );
}

function Keys() {
  const queries = useQueryClient();
  const keys = useQuery({ queryKey: ['keys'], queryFn: () => den().listSshKeys() });
  const [publicKey, setPublicKey] = useState('');
  const add = useMutation({
    mutationFn: () => den().addSshKey({ publicKey }),
    onSuccess: async () => {
      setPublicKey('');
      await queries.invalidateQueries({ queryKey: ['keys'] });
    },
  });
  const remove = useMutation({ mutationFn: (id: string) => den().removeSshKey(id), onSuccess: () => queries.invalidateQueries({ queryKey: ['keys'] }) });
  return (
    <section aria-labelledby="keys-title">
      <h2 id="keys-title">SSH keys</h2>
      <p>Keys are stored for SSH access to workspaces, which is coming.</p>
      <RequestError error={keys.error ?? remove.error} />
      <ul>
        {(keys.data?.keys ?? []).map((key) => (
          <li key={key.id}>{key.name} <code>{key.fingerprint}</code> <ActionButton label={`Remove ${key.name}`} danger confirm="This key can no longer be used." onAction={() => remove.mutate(key.id)} /></li>
        ))}
      </ul>
      <form onSubmit={(event: FormEvent) => { event.preventDefault(); add.mutate(); }}>
        <label>Public key <textarea rows={3} value={publicKey} onChange={(event) => setPublicKey(event.target.value)} required placeholder="ssh-ed25519 AAAA… you@laptop" /></label>
        <button type="submit" disabled={add.isPending}>Add the key</button>
      </form>
      <RequestError error={add.error} />
    </section>
  );
}
