import { lazy, Suspense, useEffect } from 'react';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { Link, Redirect, Route, Switch, useLocation } from 'wouter';
import { den, errorText, fetchSession, type Me } from './api.ts';
import { SignIn, Setup } from './auth.tsx';
import { WorkspaceList } from './workspaces.tsx';
import { useLiveEvents, type LiveState } from './live.ts';
import { NotFound, Problem } from './ui.tsx';

// Pages other than the workspaces list load on demand (the workspace page pulls in the terminal).
const CreateWorkspace = lazy(() => import('./create.tsx').then((m) => ({ default: m.CreateWorkspace })));
const WorkspacePage = lazy(() => import('./workspace.tsx').then((m) => ({ default: m.WorkspacePage })));
const Templates = lazy(() => import('./templates.tsx').then((m) => ({ default: m.Templates })));
const TemplatePage = lazy(() => import('./templates.tsx').then((m) => ({ default: m.TemplatePage })));
const Users = lazy(() => import('./users.tsx').then((m) => ({ default: m.Users })));
const Settings = lazy(() => import('./settings.tsx').then((m) => ({ default: m.Settings })));
const EnvironmentPage = lazy(() => import('./environment.tsx').then((m) => ({ default: m.EnvironmentPage })));
const SharedWithMe = lazy(() => import('./grants.tsx').then((m) => ({ default: m.SharedWithMe })));

/** /@<owner>/<name>: a pattern of `:param` segments cannot start with the @ */
const WORKSPACE_PATH = /^\/@(?<owner>[^/]+)\/(?<name>[^/]+)\/?$/;
/** /@<owner>/<name>/env: the environment's page (its owner's, and a teammate's read-only view) */
const ENVIRONMENT_PATH = /^\/@(?<owner>[^/]+)\/(?<name>[^/]+)\/env\/?$/;

/** Decides between first-user setup, sign-in and the signed-in dashboard. */
export function App() {
  const setup = useQuery({ queryKey: ['setup'], queryFn: () => den().setupStatus(), staleTime: Infinity });
  const session = useQuery({ queryKey: ['session'], queryFn: fetchSession, staleTime: 60_000 });
  const [path] = useLocation();

  if (setup.isPending || session.isPending) return <p className="loading" role="status">Loading den…</p>;
  if (setup.error || session.error) {
    return (
      <main className="narrow">
        <Problem title="den does not answer">
          {errorText(setup.error ?? session.error)} <button onClick={() => { void setup.refetch(); void session.refetch(); }}>Try again</button>
        </Problem>
      </main>
    );
  }
  if (setup.data.setupRequired) return path === '/setup' ? <Setup /> : <Redirect to="/setup" replace />;
  if (!session.data) {
    if (path === '/login') return <SignIn />;
    return <Redirect to={`/login?next=${encodeURIComponent(path + window.location.search)}`} replace />;
  }
  return <SignedIn me={session.data} />;
}

function SignedIn({ me }: { me: Me }) {
  const live = useLiveEvents();
  const admin = me.role === 'owner' || me.role === 'template-admin';
  return (
    <>
      <a className="skip" href="#main">Skip to content</a>
      <header className="top">
        <nav aria-label="Main">
          <Link href="/workspaces" className="brand">den</Link>
          <Link href="/workspaces">Workspaces</Link>
          <Link href="/shared">Shared with me</Link>
          {admin && <Link href="/templates">Templates</Link>}
          {me.role === 'owner' && <Link href="/users">Users</Link>}
          <Link href="/settings">Settings</Link>
        </nav>
        <span className="who">{me.username} <small>({me.role})</small></span>
        <SignOut />
      </header>
      <LiveBanner state={live} />
      <main id="main">
        <Suspense fallback={<p className="loading" role="status">Loading…</p>}>
          <Switch>
            <Route path="/"><Redirect to="/workspaces" replace /></Route>
            <Route path="/login"><Redirect to={nextPath()} replace /></Route>
            <Route path="/setup"><Redirect to="/workspaces" replace /></Route>
            <Route path="/workspaces"><WorkspaceList me={me} /></Route>
            <Route path="/workspaces/new"><CreateWorkspace me={me} /></Route>
            <Route path="/shared"><SharedWithMe /></Route>
            <Route path={ENVIRONMENT_PATH}>{(params) => <EnvironmentPage owner={decodeURIComponent(params.owner!)} name={decodeURIComponent(params.name!)} />}</Route>
            <Route path={WORKSPACE_PATH}>{(params) => <WorkspacePage owner={decodeURIComponent(params.owner!)} name={decodeURIComponent(params.name!)} />}</Route>
            <Route path="/templates">{admin ? <Templates /> : <Forbidden what="Templates are managed by template admins and owners." />}</Route>
            <Route path="/templates/:name">{(params) => (admin ? <TemplatePage name={decodeURIComponent(params.name)} /> : <Forbidden what="Templates are managed by template admins and owners." />)}</Route>
            <Route path="/users">{me.role === 'owner' ? <Users me={me} /> : <Forbidden what="Only owners manage users." />}</Route>
            <Route path="/settings"><Settings /></Route>
            <Route><NotFound /></Route>
          </Switch>
        </Suspense>
      </main>
    </>
  );
}

function nextPath(): string {
  const next = new URLSearchParams(location.search).get('next');
  // only a page of the dashboard: never an open redirect (browsers read /\ as //, another
  // host), and not den's API (the way back to an app comes from the login's answer, checked by den)
  return next && /^\/(?![/\\])/.test(next) && !next.startsWith('/api/') ? next : '/workspaces';
}

function Forbidden({ what }: { what: string }) {
  return (
    <Problem title="You do not have access to this page">
      {what} Ask an owner of this den server if you need it. <Link href="/workspaces">Back to your workspaces</Link>
    </Problem>
  );
}

function SignOut() {
  const queries = useQueryClient();
  return (
    <button
      className="link"
      onClick={async () => {
        await den().logout().catch(() => undefined);
        queries.clear();
        location.assign('/login');
      }}
    >
      Sign out
    </button>
  );
}

/** The event stream's state: says so when the connection to den is lost, and when it is back. */
function LiveBanner({ state }: { state: LiveState }) {
  useEffect(() => {
    document.body.dataset.live = state.kind;
  }, [state.kind]);
  if (state.kind !== 'lost') return null;
  return (
    <div className="banner" role="status">
      The connection to den was lost ({state.reason}). Reconnecting{state.retryInS ? ` in ${state.retryInS} s` : ''}… What you typed is kept.
    </div>
  );
}
