import { useEffect, useId, useRef, type ReactNode } from 'react';
import { Link } from 'wouter';
import { errorText, validationsOf } from './api.ts';

export function Problem({ title, children }: { title: string; children?: ReactNode }) {
  useEffect(() => {
    document.title = `${title} — den`;
  }, [title]);
  return (
    <section className="problem" aria-labelledby="problem-title">
      <h1 id="problem-title">{title}</h1>
      <p>{children}</p>
    </section>
  );
}

export function NotFound({ what }: { what?: string }) {
  return (
    <Problem title="Not found">
      {what ?? 'There is no page at this address.'} It may have been deleted or renamed, or you may not have access to it. <Link href="/workspaces">Go to your workspaces</Link>
    </Problem>
  );
}

/** A failed request's sentence (and its field errors) next to the form that sent it. */
export function RequestError({ error }: { error: unknown }) {
  if (!error) return null;
  const validations = validationsOf(error);
  return (
    <div className="error" role="alert">
      <p>{errorText(error)}</p>
      {validations.length > 0 && (
        <ul>
          {validations.map((issue, index) => (
            <li key={index}>
              {issue.line ? `line ${issue.line}: ` : ''}
              {issue.field ? <code>{issue.field}</code> : null} {issue.detail}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

const STATUS_TONE: Record<string, string> = {
  running: 'ok', starting: 'busy', pending: 'busy', stopping: 'busy', deleting: 'busy', stopped: 'idle', deleted: 'idle', failed: 'bad',
  succeeded: 'ok', queued: 'busy', canceled: 'idle', down: 'bad', unknown: 'idle', ready: 'ok', start_error: 'bad',
  passed: 'ok', watching: 'ok', applying: 'busy', initialising: 'busy', waiting: 'busy', error: 'bad',
};

export function Status({ value }: { value: string }) {
  return <span className={`status ${STATUS_TONE[value] ?? 'idle'}`}>{value}</span>;
}

/** A service's state, since when (unless down), and the sentence that says why it is down. */
export function ServiceState({ service }: { service: { state: string; since: string | null; message: string | null } }) {
  return (
    <>
      <Status value={service.state} /> {service.since && service.state !== 'down' && <Age at={service.since} />}
      {service.message && <p className="problem-text">{service.message}</p>}
    </>
  );
}

/** "3 min ago" for an ISO time, with the exact time as a tooltip. */
export function Age({ at }: { at: string | null | undefined }) {
  if (!at) return <span>never</span>;
  return <time dateTime={at} title={new Date(at).toLocaleString()}>{ago(at)}</time>;
}

export function ago(at: string): string {
  const seconds = Math.max(0, Math.round((Date.now() - new Date(at).getTime()) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86_400)} d ago`;
}

/**
 * A button that asks first when `confirm` is given (what is lost, in a sentence): a modal
 * <dialog>, which keeps the keyboard inside it and closes on Escape.
 */
export function ActionButton({ label, confirm, onAction, disabled, danger }: {
  label: string;
  confirm?: string;
  onAction: () => void;
  disabled?: boolean;
  danger?: boolean;
}) {
  const dialog = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  return (
    <>
      <button className={danger ? 'danger' : undefined} disabled={disabled} onClick={() => (confirm ? dialog.current?.showModal() : onAction())}>
        {label}
      </button>
      {confirm && (
        <dialog ref={dialog} aria-labelledby={titleId}>
          <form method="dialog">
            <h2 id={titleId}>{label}?</h2>
            <p>{confirm}</p>
            <div className="row">
              <button value="cancel" autoFocus>Cancel</button>
              <button value="ok" className={danger ? 'danger' : undefined} onClick={() => onAction()}>{label}</button>
            </div>
          </form>
        </dialog>
      )}
    </>
  );
}

export function usePageTitle(title: string): void {
  useEffect(() => {
    document.title = `${title} — den`;
  }, [title]);
}
