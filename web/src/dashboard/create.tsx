import { useEffect, useState, type FormEvent } from 'react';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { Link, useLocation } from 'wouter';
import type { ParameterSpec } from '../../../protocol/template-fields.ts';
import { WORKSPACE_NAME, WORKSPACE_NAME_MAX } from '../../../protocol/workspaces.ts';
import { den, type Me } from './api.ts';
import { checkParameter, initialDraft, ParameterFields, toValues, type Draft } from './params.tsx';
import { RequestError, usePageTitle } from './ui.tsx';

/** Create a workspace: a template, a name, and the form its active version's parameters make. */
export function CreateWorkspace({ me }: { me: Me }) {
  usePageTitle('New workspace');
  const [, navigate] = useLocation();
  const queries = useQueryClient();
  const templates = useQuery({ queryKey: ['templates'], queryFn: () => den().templates.list() });
  const usable = (templates.data?.templates ?? []).filter((template) => template.activeVersion !== null);
  const [template, setTemplate] = useState(() => new URLSearchParams(location.search).get('template') ?? '');
  const chosen = usable.find((entry) => entry.name === template) ?? usable[0];
  const version = useQuery({
    queryKey: ['template-version', chosen?.name, chosen?.activeVersion],
    queryFn: () => den().templates.version(chosen!.name, chosen!.activeVersion!),
    enabled: Boolean(chosen),
  });
  const parameters = ((version.data?.spec as { parameters?: ParameterSpec[] } | undefined)?.parameters ?? []);
  const [name, setName] = useState('');
  const [draft, setDraft] = useState<Draft>({});
  const [touched, setTouched] = useState(new Set<string>());
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  // a new template's defaults, keeping what was typed for parameters of the same name
  useEffect(() => {
    if (version.data) setDraft((previous) => ({ ...initialDraft(parameters), ...pick(previous, parameters) }));
  }, [version.data]);

  const nameProblem = touched.has('#name') ? checkName(name) : undefined;
  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setTouched(new Set(['#name', ...parameters.map((parameter) => parameter.name)]));
    if (checkName(name) || parameters.some((parameter) => checkParameter(parameter, draft[parameter.name] ?? ''))) return;
    setBusy(true);
    setError(undefined);
    try {
      const created = await den().workspaces.create({ name, template: chosen!.name, params: toValues(parameters, draft) });
      await queries.invalidateQueries({ queryKey: ['workspaces'] });
      navigate(`/@${encodeURIComponent(created.workspace.owner)}/${encodeURIComponent(created.workspace.name)}`);
    } catch (failure) {
      // everything typed stays in the form
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  if (templates.data && usable.length === 0) {
    return (
      <section>
        <h1>New workspace</h1>
        <p>There is no template with an active version yet. {me.role === 'member' ? 'Ask a template admin to push one.' : <><Link href="/templates">Upload a template</Link> first.</>}</p>
      </section>
    );
  }
  return (
    <form className="card wide" onSubmit={submit} noValidate aria-labelledby="create-title">
      <h1 id="create-title">New workspace</h1>
      <RequestError error={templates.error} />
      <div className="field">
        <label htmlFor="template">Template
          <select id="template" value={chosen?.name ?? ''} onChange={(event) => setTemplate(event.target.value)}>
            {usable.map((entry) => <option key={entry.name} value={entry.name}>{entry.displayName} (v{entry.activeVersion})</option>)}
          </select>
        </label>
        {chosen?.description && <small>{chosen.description}</small>}
      </div>
      <div className="field">
        <label htmlFor="name">Name
          <input id="name" value={name} autoCapitalize="none" spellCheck={false} required maxLength={WORKSPACE_NAME_MAX} aria-invalid={Boolean(nameProblem)} aria-describedby="name-hint"
            onChange={(event) => { setName(event.target.value); setTouched((previous) => new Set(previous).add('#name')); }} />
        </label>
        <small id="name-hint">{nameProblem ? <span className="problem-text" role="alert">{nameProblem}</span> : 'Lowercase letters, digits and inner dashes; it becomes part of URLs.'}</small>
      </div>
      <RequestError error={version.error} />
      {parameters.length > 0 && (
        <fieldset className="group">
          <legend>Parameters</legend>
          <ParameterFields parameters={parameters} draft={draft} touched={touched}
            onChange={(key, value) => { setDraft((previous) => ({ ...previous, [key]: value })); setTouched((previous) => new Set(previous).add(key)); }} />
        </fieldset>
      )}
      <div className="row">
        <button type="submit" className="primary" disabled={busy || !chosen}>Create workspace</button>
        <Link href="/workspaces">Cancel</Link>
      </div>
      <RequestError error={error} />
    </form>
  );
}

function checkName(name: string): string | undefined {
  if (!name) return 'Give the workspace a name.';
  if (name.length > WORKSPACE_NAME_MAX) return `Use at most ${WORKSPACE_NAME_MAX} characters.`;
  if (!WORKSPACE_NAME.test(name)) return 'Use lowercase letters, digits and inner dashes only (for example my-api).';
  return undefined;
}

function pick(draft: Draft, parameters: ParameterSpec[]): Draft {
  return Object.fromEntries(parameters.filter((parameter) => parameter.name in draft && draft[parameter.name] !== '').map((parameter) => [parameter.name, draft[parameter.name]]));
}
