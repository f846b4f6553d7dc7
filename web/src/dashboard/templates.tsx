import { useState, type FormEvent } from 'react';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { Link } from 'wouter';
import { den, errorText, validationsOf } from './api.ts';
import { Age, NotFound, RequestError, usePageTitle } from './ui.tsx';
import { readTarball } from './tar.ts';

const TARBALL = /\.(tar\.gz|tgz|tar)$/i;

/** Template admins and owners: the templates, and a form to push a folder as a new version. */
export function Templates() {
  usePageTitle('Templates');
  const templates = useQuery({ queryKey: ['templates'], queryFn: () => den().templates.list() });
  return (
    <section aria-labelledby="templates-title">
      <h1 id="templates-title">Templates</h1>
      <RequestError error={templates.error} />
      <table className="list">
        <thead><tr><th scope="col">Template</th><th scope="col">Active version</th><th scope="col">Versions</th><th scope="col">Workspaces</th><th scope="col">Updated</th></tr></thead>
        <tbody>
          {(templates.data?.templates ?? []).map((template) => (
            <tr key={template.name}>
              <td><Link href={`/templates/${encodeURIComponent(template.name)}`}>{template.displayName}</Link> <small>{template.name}</small></td>
              <td>{template.activeVersion === null ? 'none' : `v${template.activeVersion}`}</td>
              <td>{template.versions}</td>
              <td>{template.workspaces}</td>
              <td><Age at={template.updatedAt} /></td>
            </tr>
          ))}
          {templates.data?.templates.length === 0 && <tr><td colSpan={5}>No templates yet: upload a template folder below.</td></tr>}
        </tbody>
      </table>
      <Upload />
    </section>
  );
}

/**
 * Pushes a folder (or its files) as a new version. The server validates it; its errors are shown
 * with the file and line they are about. The chosen files stay chosen after a refusal.
 */
function Upload() {
  const queries = useQueryClient();
  const [files, setFiles] = useState<Record<string, string>>({});
  const [message, setMessage] = useState('');
  const [activate, setActivate] = useState(true);
  const push = useMutation({
    mutationFn: () => den().templates.push({ files, message: message || undefined, activate }),
    onSuccess: () => queries.invalidateQueries({ queryKey: ['templates'] }),
  });
  const [readError, setReadError] = useState<string>();
  const choose = async (list: FileList | null) => {
    push.reset();
    setReadError(undefined);
    const chosen = [...(list ?? [])];
    try {
      if (chosen.length === 1 && TARBALL.test(chosen[0].name)) {
        setFiles(await readTarball(chosen[0]));
        return;
      }
      const entries = await Promise.all(chosen.map(async (file) => [relativePath(file), await file.text()] as const));
      setFiles(Object.fromEntries(entries));
    } catch (error) {
      setFiles({});
      setReadError((error as Error).message);
    }
  };
  const submit = (event: FormEvent) => {
    event.preventDefault();
    push.mutate();
  };
  const count = Object.keys(files).length;
  return (
    <form className="card wide" onSubmit={submit} aria-labelledby="upload-title">
      <h2 id="upload-title">Upload a version</h2>
      <p>Choose a template folder (with template.yaml at its top), its files, or a tarball of it (.tar.gz, .tgz, .tar).</p>
      <div className="row">
        <label>Folder <input type="file" {...{ webkitdirectory: '' }} onChange={(event) => void choose(event.target.files)} /></label>
        <label>Files or a tarball <input type="file" multiple data-testid="template-files" onChange={(event) => void choose(event.target.files)} /></label>
      </div>
      {readError && <p className="problem-text" role="alert">{readError}</p>}
      {count > 0 && <p>{count} file{count === 1 ? '' : 's'}: {Object.keys(files).sort().join(', ')}</p>}
      <label>Message (optional) <input value={message} onChange={(event) => setMessage(event.target.value)} maxLength={2000} /></label>
      <label className="inline"><input type="checkbox" checked={activate} onChange={(event) => setActivate(event.target.checked)} /> Make it the active version</label>
      <button type="submit" className="primary" disabled={count === 0 || push.isPending}>Upload</button>
      {push.data && (
        <p role="status" className="ok-text">
          {push.data.unchanged
            ? `${push.data.template.name} v${push.data.version.number} already has these files; nothing new was stored.`
            : `Uploaded ${push.data.template.name} v${push.data.version.number}${push.data.version.active ? ' (active)' : ''}.`}{' '}
          <Link href={`/templates/${encodeURIComponent(push.data.template.name)}`}>Open {push.data.template.name}</Link>
        </p>
      )}
      {push.error && <TemplateErrors error={push.error} files={files} />}
    </form>
  );
}

/** The server's refusal, each issue with the line of template.yaml it is about, quoted. */
function TemplateErrors({ error, files }: { error: unknown; files: Record<string, string> }) {
  const yaml = (files['template.yaml'] ?? '').split('\n');
  return (
    <div className="error" role="alert">
      <p>{errorText(error)}</p>
      <ul>
        {validationsOf(error).map((issue, index) => (
          <li key={index}>
            {issue.line ? <>template.yaml line {issue.line}: </> : null}{issue.field && <code>{issue.field}</code>} {issue.detail}
            {issue.line && yaml[issue.line - 1] !== undefined && <pre className="quote">{`${issue.line} | ${yaml[issue.line - 1]}`}</pre>}
          </li>
        ))}
      </ul>
    </div>
  );
}

function relativePath(file: File): string {
  const path = (file as File & { webkitRelativePath?: string }).webkitRelativePath;
  // a folder's files come as "folder/template.yaml": the folder's own name is not part of the template
  return path ? path.split('/').slice(1).join('/') : file.name;
}

export function TemplatePage({ name }: { name: string }) {
  usePageTitle(`Template ${name}`);
  const queries = useQueryClient();
  const template = useQuery({ queryKey: ['template', name], queryFn: () => den().templates.get(name) });
  const behind = useQuery({ queryKey: ['workspaces', { all: true, template: name }], queryFn: () => den().workspaces.list({ all: true, limit: 500 }) });
  const [shown, setShown] = useState<number>();
  const version = useQuery({ queryKey: ['template-version', name, shown], queryFn: () => den().templates.version(name, shown!), enabled: shown !== undefined });
  const activate = useMutation({
    mutationFn: (number: number) => den().templates.activate(name, number),
    onSuccess: () => queries.invalidateQueries({ queryKey: ['template', name] }),
  });
  if (template.error && (template.error as { status?: number }).status === 404) return <NotFound what={`There is no template '${name}'.`} />;
  if (!template.data) return <RequestError error={template.error} />;
  const outdated = (behind.data?.workspaces ?? []).filter((workspace) => workspace.template === name && workspace.outdated);
  return (
    <article aria-labelledby="template-title">
      <h1 id="template-title">{template.data.displayName} <small>{template.data.name}</small></h1>
      <p>{template.data.description}</p>
      <h2>Versions</h2>
      <table className="list">
        <thead><tr><th scope="col">Version</th><th scope="col">Pushed</th><th scope="col">By</th><th scope="col">Message</th><th scope="col">Workspaces</th><th scope="col"><span className="visually-hidden">Actions</span></th></tr></thead>
        <tbody>
          {template.data.versionList.map((entry) => (
            <tr key={entry.number}>
              <td>v{entry.number} {entry.active && <span className="status ok">active</span>}</td>
              <td><Age at={entry.createdAt} /></td>
              <td>{entry.createdBy ?? '—'}</td>
              <td>{entry.message}</td>
              <td>{entry.workspaces}</td>
              <td className="row">
                <button onClick={() => setShown(entry.number)}>View the YAML of v{entry.number}</button>
                {!entry.active && <button onClick={() => activate.mutate(entry.number)} disabled={activate.isPending}>Activate v{entry.number}</button>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <RequestError error={activate.error} />
      <h2>Workspaces behind the active version</h2>
      {outdated.length === 0 ? <p>None: every workspace runs the active version.</p> : (
        <ul>{outdated.map((workspace) => <li key={workspace.id}><Link href={`/@${encodeURIComponent(workspace.owner)}/${encodeURIComponent(workspace.name)}`}>{workspace.owner}/{workspace.name}</Link> on v{workspace.templateVersion}</li>)}</ul>
      )}
      {shown !== undefined && (
        <section aria-labelledby="yaml-title">
          <h2 id="yaml-title">template.yaml of v{shown}</h2>
          <RequestError error={version.error} />
          <pre className="log" tabIndex={0} data-testid="template-yaml">{version.data?.files['template.yaml'] ?? ''}</pre>
        </section>
      )}
    </article>
  );
}
