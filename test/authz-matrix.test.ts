import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ErrorCode } from '../protocol/errors.ts';
import type { AuthLevel } from '../server/http/auth-types.ts';
import { iso } from '../server/store/time.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { storeDialects } from './support/postgres.ts';
import { api, createUserWithToken, setupOwner, TEST_PASSWORD, type TestUser } from './support/users.ts';

/**
 * The authorization matrix: every route the app registers x every caller (anonymous, member,
 * template-admin, owner) x, for workspace routes, the caller's own workspace and someone
 * else's. Anonymous callers get 401 on non-public routes, callers without the role 403, callers
 * who may not see a workspace 404 WORKSPACE_NOT_FOUND; allowed callers never get 401/403.
 *
 * Adding a route? Add a row to MATRIX (the first test fails and prints the missing rows).
 * A row needs `auth` (the level the route must declare); `workspace: true` for routes under
 * /workspaces/:owner/:name; a valid `body` when validation would otherwise answer first; and
 * `expect` overrides for callers whose answer is decided by something other than the role.
 */

type Caller = 'anonymous' | 'member' | 'template-admin' | 'owner';
const CALLERS: Caller[] = ['anonymous', 'member', 'template-admin', 'owner'];

interface Expected {
  status: number;
  code?: ErrorCode;
}

interface MatrixRow {
  /** the level the route must declare in config.auth */
  auth: AuthLevel;
  /** the route addresses /workspaces/:owner/:name: test own and someone else's workspace */
  workspace?: boolean;
  /** a body that passes validation, so the authorization decision is what answers */
  body?: Record<string, unknown> | ((ctx: MatrixContext) => Record<string, unknown>);
  /** values for path parameters other than a workspace's :owner/:name (defaults: DEFAULT_PARAMS) */
  params?: Record<string, string> | ((ctx: MatrixContext, caller: Caller) => Promise<Record<string, string>>);
  /** the request ends the caller's credential (logout): use a throwaway token */
  freshToken?: boolean;
  /** the route answers with an endless stream (server-sent events): only its status and head are read */
  stream?: boolean;
  /** fixed answers for some callers (public routes that check their own credentials) */
  expect?: Partial<Record<Caller, Expected>>;
  /** with `workspace`: fixed answers for some callers on someone else's workspace */
  expectOther?: Partial<Record<Caller, Expected>>;
}

/** the template every workspace fixture uses (pushed through the API in beforeAll) */
const MATRIX_TEMPLATE = 'matrix';

const DEFAULT_PARAMS: Record<string, string> = {
  id: 'no-such-id',
  number: '1',
  name: 'no-such-name',
  template: 'no-such-template',
  version: '1',
  '*': 'index.css',
};

const ALL_CALLERS = (expected: Expected): Partial<Record<Caller, Expected>> =>
  Object.fromEntries(CALLERS.map((caller) => [caller, expected]));

/** `METHOD url` -> row. HEAD routes mirror their GET route and are not listed. */
const MATRIX: Record<string, MatrixRow> = {
  // ---- infrastructure ----
  'GET /healthz': { auth: 'public' },
  'GET /readyz': { auth: 'public' },
  'GET /metrics': { auth: 'public' },

  // ---- API docs (@fastify/swagger-ui) ----
  'GET /api/docs': { auth: 'public' },
  'GET /api/docs/json': { auth: 'public' },
  'GET /api/docs/yaml': { auth: 'public' },
  'GET /api/docs/static/index.html': { auth: 'public' },
  'GET /api/docs/static/swagger-initializer.js': { auth: 'public' },
  'GET /api/docs/static/*': { auth: 'public' },

  // ---- setup, login, logout ----
  'GET /api/v1/setup': { auth: 'public' },
  'POST /api/v1/setup/first-user': {
    auth: 'public',
    body: { username: 'second-owner', password: TEST_PASSWORD },
    expect: ALL_CALLERS({ status: 409, code: 'FIRST_USER_EXISTS' }),
  },
  'POST /api/v1/auth/login': {
    auth: 'public',
    body: { username: 'matrix-nobody', password: 'wrong-password' },
    expect: ALL_CALLERS({ status: 401, code: 'INVALID_CREDENTIALS' }),
  },
  'POST /api/v1/auth/logout': { auth: 'user', freshToken: true },

  // ---- the signed-in user ----
  'GET /api/v1/users/me': { auth: 'user' },
  'GET /api/v1/users/me/tokens': { auth: 'user' },
  'POST /api/v1/users/me/tokens': { auth: 'user', body: { name: 'matrix' } },
  'DELETE /api/v1/users/me/tokens/:id': { auth: 'user' },
  'GET /api/v1/users/me/keys': { auth: 'user' },
  'POST /api/v1/users/me/keys': { auth: 'user', body: { publicKey: 'ssh-ed25519 AAAA' } },
  'DELETE /api/v1/users/me/keys/:id': { auth: 'user' },

  // ---- user management ----
  'GET /api/v1/users': { auth: 'owner' },
  'POST /api/v1/users': { auth: 'owner', body: (ctx) => ({ username: `matrix-new-${++ctx.counter}`, password: TEST_PASSWORD }) },
  'GET /api/v1/users/:username': { auth: 'owner', params: async (ctx) => ({ username: ctx.users.member.username }) },
  'PATCH /api/v1/users/:username': {
    auth: 'owner',
    params: async (ctx) => ({ username: ctx.users.member.username }),
    body: { displayName: 'Matrix Member' },
  },
  'DELETE /api/v1/users/:username': {
    auth: 'owner',
    // a throwaway user per request, so an allowed delete does not disturb later rows
    params: async (ctx) => ({ username: (await createUserWithToken(ctx.server.app, ctx.users.owner.token, 'member', `matrix-doomed-${++ctx.counter}`)).username }),
  },

  // ---- templates ----
  'GET /api/v1/templates/schema': { auth: 'public' },
  'GET /api/v1/templates': { auth: 'user' },
  'POST /api/v1/templates': { auth: 'template-admin', body: (ctx) => ({ files: templateFiles(`matrix-pushed-${++ctx.counter}`) }) },
  'GET /api/v1/templates/:name': { auth: 'user', params: { name: MATRIX_TEMPLATE } },
  'DELETE /api/v1/templates/:name': {
    auth: 'template-admin',
    // a throwaway template per request, so an allowed delete does not disturb later rows
    params: async (ctx) => ({ name: await pushTemplate(ctx, `matrix-doomed-${++ctx.counter}`) }),
  },
  'GET /api/v1/templates/:name/versions': { auth: 'user', params: { name: MATRIX_TEMPLATE } },
  'GET /api/v1/templates/:name/versions/:number': { auth: 'user', params: { name: MATRIX_TEMPLATE, number: '1' } },
  'POST /api/v1/templates/:name/activate': { auth: 'template-admin', params: { name: MATRIX_TEMPLATE }, body: { version: 1 } },

  // ---- workspaces ----
  'POST /api/v1/workspaces': { auth: 'user', body: { name: 'matrix-created', template: 'no-such-template' } },
  'GET /api/v1/workspaces': { auth: 'user' },
  'GET /api/v1/workspaces/:owner/:name': { auth: 'user', workspace: true },
  'POST /api/v1/workspaces/:owner/:name/start': { auth: 'user', workspace: true, body: {} },
  'POST /api/v1/workspaces/:owner/:name/stop': { auth: 'user', workspace: true, body: {} },
  'POST /api/v1/workspaces/:owner/:name/restart': { auth: 'user', workspace: true, body: {} },
  'POST /api/v1/workspaces/:owner/:name/update': { auth: 'user', workspace: true, body: {} },
  'POST /api/v1/workspaces/:owner/:name/cancel': { auth: 'user', workspace: true },
  'DELETE /api/v1/workspaces/:owner/:name': { auth: 'user', workspace: true },
  'GET /api/v1/workspaces/:owner/:name/builds': { auth: 'user', workspace: true },
  'GET /api/v1/workspaces/:owner/:name/events': { auth: 'user', workspace: true },
  'GET /api/v1/workspaces/:owner/:name/builds/:number': { auth: 'user', workspace: true },
  'GET /api/v1/workspaces/:owner/:name/builds/:number/logs': { auth: 'user', workspace: true },
  // the matrix template declares no services: allowed callers get 404 SERVICE_NOT_FOUND
  'GET /api/v1/workspaces/:owner/:name/services/:service/logs': { auth: 'user', workspace: true, params: { service: 'db' } },
  'GET /api/v1/workspaces/:owner/:name/sync': { auth: 'user', workspace: true },
  // the matrix template syncs nothing: allowed callers get 404 SYNC_NOT_FOUND
  'POST /api/v1/workspaces/:owner/:name/sync/restart': { auth: 'user', workspace: true, body: {} },

  // ---- agents ----
  // Public at the HTTP layer: the agent token is checked by the route. User API tokens must not open it.
  'GET /api/v1/agent/connect': { auth: 'public', expect: ALL_CALLERS({ status: 401, code: 'AGENT_UNAUTHORIZED' }) },
  // the agent bundle (for init containers): an agent token of a live workspace, never a user's credentials
  'GET /api/v1/events': { auth: 'user', stream: true },
  'GET /api/v1/agent/bundle': { auth: 'public', expect: ALL_CALLERS({ status: 401, code: 'AGENT_UNAUTHORIZED' }) },
  // replica to replica only: a user's token or session opens nothing here
  'GET /api/v1/replicas/relay': { auth: 'public', expect: ALL_CALLERS({ status: 401, code: 'REPLICA_UNAUTHORIZED' }) },
  'GET /api/v1/workspaces/:owner/:name/exec': { auth: 'user', workspace: true },

  // ---- web pages (server/web): public, they hold no data; the page signs in through the API ----
  'GET /@:owner/:name/terminal': { auth: 'public', params: { owner: 'matrix-other', name: 'any' } },
  'GET /web/*': { auth: 'public', params: { '*': 'no-such-build/assets/none.js' } },
  // the dashboard's pages: one HTML document each; the data comes through the API
  'GET /': { auth: 'public' },
  'GET /login': { auth: 'public' },
  'GET /setup': { auth: 'public' },
  'GET /settings': { auth: 'public' },
  'GET /workspaces': { auth: 'public' },
  'GET /workspaces/new': { auth: 'public' },
  'GET /templates': { auth: 'public' },
  'GET /templates/:name': { auth: 'public', params: { name: 'any' } },
  'GET /users': { auth: 'public' },
  'GET /@:owner/:name': { auth: 'public', params: { owner: 'matrix-other', name: 'any' } },
  'GET /shared': { auth: 'public' },
  'GET /@:owner/:name/env': { auth: 'public', params: { owner: 'matrix-other', name: 'any' } },

  // ---- apps and ports in path mode (server/apps): public routes that check their own
  // credentials; only the workspace's owner gets through, not even the owner role (docs/apps.md)
  ...appProxyRows(),

  // ---- terminal ----
  'GET /api/v1/workspaces/:owner/:name/terminal': { auth: 'user', workspace: true },
  'GET /api/v1/workspaces/:owner/:name/terminals': { auth: 'user', workspace: true },
  'DELETE /api/v1/workspaces/:owner/:name/terminals/:id': { auth: 'user', workspace: true },
  // ---- SSH gateway ----
  'GET /api/v1/ssh': { auth: 'user' },
  'GET /api/v1/workspaces/:owner/:name/ssh-sessions': { auth: 'user', workspace: true },
  'GET /api/v1/workspaces/:owner/:name/ssh': { auth: 'user', workspace: true },
  'GET /api/v1/workspaces/:owner/:name/port-forward': { auth: 'user', workspace: true },
  'GET /api/v1/workspaces/:owner/:name/ports': { auth: 'user', workspace: true },
  // only the workspace's owner shares its apps; the owner role sees others' workspaces but gets 403
  'PUT /api/v1/workspaces/:owner/:name/shares/:target': { auth: 'user', workspace: true, params: { target: '8080' }, body: { level: 'owner' }, expectOther: { owner: { status: 403, code: 'FORBIDDEN' } } },
  // ---- environment: tasks and tests (who may exec), the read-only view and logs (also
  // teammates with a grant: test/environment-loop.test.ts), grants (the workspace's owner alone) ----
  'GET /api/v1/workspaces/:owner/:name/env': { auth: 'user', workspace: true },
  'GET /api/v1/workspaces/:owner/:name/env/logs': { auth: 'user', workspace: true },
  'POST /api/v1/workspaces/:owner/:name/env/tasks/:entry/run': { auth: 'user', workspace: true, params: { entry: 'seed' } },
  'POST /api/v1/workspaces/:owner/:name/env/tests/:entry/run': { auth: 'user', workspace: true, params: { entry: 'smoke' } },
  'GET /api/v1/workspaces/:owner/:name/env/runs': { auth: 'user', workspace: true },
  'GET /api/v1/workspaces/:owner/:name/env/runs/:id': { auth: 'user', workspace: true },
  'GET /api/v1/workspaces/:owner/:name/env/grants': { auth: 'user', workspace: true },
  'PUT /api/v1/workspaces/:owner/:name/env/grants/:user': { auth: 'user', workspace: true, params: { user: 'matrix-tadmin' }, expectOther: { owner: { status: 403, code: 'FORBIDDEN' } } },
  'DELETE /api/v1/workspaces/:owner/:name/env/grants/:user': { auth: 'user', workspace: true, params: { user: 'matrix-tadmin' }, expectOther: { owner: { status: 403, code: 'FORBIDDEN' } } },
  'PUT /api/v1/workspaces/:owner/:name/env/grants/groups/:group': { auth: 'user', workspace: true, params: { group: 'no-such-group' }, expectOther: { owner: { status: 403, code: 'FORBIDDEN' } } },
  'DELETE /api/v1/workspaces/:owner/:name/env/grants/groups/:group': { auth: 'user', workspace: true, params: { group: 'no-such-group' }, expectOther: { owner: { status: 403, code: 'FORBIDDEN' } } },
  'GET /api/v1/environments/shared': { auth: 'user' },

  // ---- groups: anyone signed in reads them (to grant one), den's owners change them ----
  'GET /api/v1/groups': { auth: 'user' },
  'POST /api/v1/groups': { auth: 'owner', body: (ctx) => ({ name: `matrix-group-${++ctx.counter}` }) },
  'GET /api/v1/groups/:group': { auth: 'user', params: async (ctx) => ({ group: await createGroup(ctx) }) },
  // a throwaway group per request, so an allowed delete does not disturb later rows
  'DELETE /api/v1/groups/:group': { auth: 'owner', params: async (ctx) => ({ group: await createGroup(ctx) }) },
  'PUT /api/v1/groups/:group/members/:user': { auth: 'owner', params: async (ctx) => ({ group: await createGroup(ctx), user: ctx.users.member.username }) },
  'DELETE /api/v1/groups/:group/members/:user': { auth: 'owner', params: async (ctx) => ({ group: await createGroup(ctx), user: ctx.users.member.username }) },
  'GET /api/v1/group-events': { auth: 'owner' },
};

async function createGroup(ctx: MatrixContext): Promise<string> {
  const name = `matrix-group-${++ctx.counter}`;
  const created = await ctx.server.app.inject({ method: 'POST', url: '/api/v1/groups', headers: { authorization: `Bearer ${ctx.users.owner.token}` }, payload: { name } });
  if (created.statusCode !== 201) throw new Error(`creating group ${name} failed: ${created.statusCode} ${created.body}`);
  return name;
}

function appProxyRows(): Record<string, MatrixRow> {
  const row: MatrixRow = {
    auth: 'public', workspace: true, params: { port: '8080', app: 'web', '*': 'index.html' },
    expect: { anonymous: { status: 401, code: 'UNAUTHENTICATED' } },
    expectOther: { owner: { status: 403, code: 'FORBIDDEN' } },
  };
  const rows: Record<string, MatrixRow> = {};
  // subdomain mode's app hosts, routed under /.den-app by Host (test/e2e/apps.test.ts signs in
  // through them); on den's own host there is nothing there for anyone
  const appHostRow: MatrixRow = { auth: 'public', expect: ALL_CALLERS({ status: 404, code: 'NOT_FOUND' }) };
  for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
    for (const url of ['/@:owner/:name/ports/:port', '/@:owner/:name/ports/:port/*', '/@:owner/:name/apps/:app', '/@:owner/:name/apps/:app/*']) {
      rows[`${method} ${url}`] = row;
    }
    for (const url of ['/.den-app', '/.den-app/*']) rows[`${method} ${url}`] = appHostRow;
  }
  // the first half of an app host's sign-in: it needs an app host of --apps-wildcard-domain, which
  // this server has none of (the e2e test covers who gets through)
  rows['GET /api/v1/apps/authorize'] = { auth: 'public', expect: ALL_CALLERS({ status: 400, code: 'VALIDATION_FAILED' }) };
  return rows;
}

/**
 * Cases where a query string, not the route, decides who may call: `auth` is the effective
 * level for that query. The route itself must have a MATRIX row.
 */
const QUERY_VARIANTS: { route: string; query: string; row: MatrixRow }[] = [
  { route: 'GET /api/v1/workspaces', query: 'all=1', row: { auth: 'owner' } },
  { route: 'GET /api/v1/workspaces', query: 'owner=matrix-other', row: { auth: 'owner' } },
];

interface MatrixContext {
  server: TestServer;
  users: Record<Exclude<Caller, 'anonymous'>, TestUser> & { other: TestUser };
  templateVersion: { templateId: string; versionId: string };
  counter: number;
}

describe.each(storeDialects)('authorization matrix on %s', (dialect) => {
  const ctx = { counter: 0 } as MatrixContext;

  beforeAll(async () => {
    ctx.server = await startTestServer({ dialect, startWorkers: false });
    const owner = await setupOwner(ctx.server.app, 'matrix-owner');
    ctx.users = {
      owner,
      'template-admin': await createUserWithToken(ctx.server.app, owner.token, 'template-admin', 'matrix-tadmin'),
      member: await createUserWithToken(ctx.server.app, owner.token, 'member', 'matrix-member'),
      // the "someone else" whose workspaces the callers try to reach
      other: await createUserWithToken(ctx.server.app, owner.token, 'member', 'matrix-other'),
    };
    ctx.templateVersion = await templateIds(ctx, await pushTemplate(ctx, MATRIX_TEMPLATE));
  });
  afterAll(async () => {
    await ctx.server?.close();
  });

  it('has a row for every route the app registers, and a route for every row', () => {
    const registered = ctx.server.app.registeredRoutes.filter((r) => r.method !== 'HEAD').map((r) => `${r.method} ${r.url}`);
    const missing = registered.filter((key) => !(key in MATRIX));
    const stale = Object.keys(MATRIX).filter((key) => !registered.includes(key));
    expect(missing, `Add these routes to MATRIX in test/authz-matrix.test.ts:\n${missing.map((k) => `  '${k}': { auth: ... },`).join('\n')}\n`).toEqual([]);
    expect(stale, 'These MATRIX rows name routes the app no longer registers; remove them.').toEqual([]);
  });

  it('sees every route the router holds (none registered before the auth plugin)', () => {
    // printRoutes lists what the router really serves; a route registered before authPlugin
    // would be served but missing from registeredRoutes (and never checked at start-up).
    const served = [...ctx.server.app.printRoutes({ commonPrefix: false }).matchAll(/\(([A-Z, ]+)\)/g)]
      .flatMap((match) => match[1].split(', '))
      .filter((method) => method !== 'HEAD');
    const registered = ctx.server.app.registeredRoutes.filter((r) => r.method !== 'HEAD');
    expect(registered.length).toBe(served.length);
  });

  it('finds each route declaring the access level its row expects', () => {
    const declared = Object.fromEntries(ctx.server.app.registeredRoutes.map((r) => [`${r.method} ${r.url}`, r.auth]));
    const wrong = Object.entries(MATRIX)
      .filter(([key, row]) => key in declared && declared[key] !== row.auth)
      .map(([key, row]) => `${key}: declares '${declared[key]}', the matrix expects '${row.auth}'`);
    expect(wrong).toEqual([]);
  });

  it('has a MATRIX row for the route of every query variant', () => {
    expect(QUERY_VARIANTS.map((v) => v.route).filter((route) => !(route in MATRIX))).toEqual([]);
  });

  const cases: [string, MatrixRow][] = [
    ...Object.entries(MATRIX),
    ...QUERY_VARIANTS.map((v): [string, MatrixRow] => [`${v.route}?${v.query}`, v.row]),
  ];
  for (const [key, row] of cases) {
    it(`${key}: ${describeRow(row)}`, async () => {
      const failures: string[] = [];
      for (const caller of CALLERS) {
        const scopes: ('own' | 'other' | undefined)[] = row.workspace ? (caller === 'anonymous' ? ['other'] : ['own', 'other']) : [undefined];
        for (const scope of scopes) {
          const response = await call(ctx, key, row, caller, scope);
          const problem = check(expectationFor(row, caller, scope), response, row);
          if (problem) failures.push(`${caller}${scope ? ` (${scope} workspace)` : ''}: ${problem}`);
        }
      }
      expect(failures, `${key}\n  ${failures.join('\n  ')}`).toEqual([]);
    });
  }
});

type Expectation = Expected | { allowed: true };

function expectationFor(row: MatrixRow, caller: Caller, scope: 'own' | 'other' | undefined): Expectation {
  const fixed = (scope === 'other' ? row.expectOther?.[caller] : undefined) ?? row.expect?.[caller];
  if (fixed) return fixed;
  if (caller === 'anonymous') return row.auth === 'public' ? { allowed: true } : { status: 401, code: 'UNAUTHENTICATED' };
  if (!meets(caller, row.auth)) return { status: 403, code: 'FORBIDDEN' };
  // the owner role sees every workspace; everyone else only their own
  if (row.workspace && scope === 'other' && caller !== 'owner') return { status: 404, code: 'WORKSPACE_NOT_FOUND' };
  return { allowed: true };
}

function check(expected: Expectation, response: { status: number; json: any }, row: MatrixRow): string | undefined {
  const code = response.json?.error?.code as string | undefined;
  const got = `${response.status}${code ? ` ${code}` : ''}`;
  if ('allowed' in expected) {
    if (response.status === 401 || response.status === 403) return `expected to be allowed, got ${got}`;
    if (row.workspace && code === 'WORKSPACE_NOT_FOUND') return `expected to see the workspace, got ${got}`;
    if (response.status >= 500) return `expected an answer that is not a server error, got ${got}: ${response.json?.error?.message}`;
    return undefined;
  }
  if (response.status !== expected.status || (expected.code && code !== expected.code)) {
    return `expected ${expected.status}${expected.code ? ` ${expected.code}` : ''}, got ${got}`;
  }
  return undefined;
}

function meets(caller: Exclude<Caller, 'anonymous'>, level: AuthLevel): boolean {
  if (level === 'public' || level === 'user') return true;
  if (level === 'template-admin') return caller === 'owner' || caller === 'template-admin';
  return caller === 'owner';
}

/** Opens a streaming GET, reads its status (and the error envelope of a refusal), and closes it. */
async function openStream(ctx: MatrixContext, url: string, token: string | undefined) {
  const controller = new AbortController();
  const response = await ctx.server.app.inject({
    method: 'GET', url, headers: token ? { authorization: `Bearer ${token}` } : {}, payloadAsStream: true, signal: controller.signal,
  });
  if (response.statusCode < 400) {
    controller.abort();
    return { status: response.statusCode, json: undefined, headers: response.headers };
  }
  let text = '';
  for await (const chunk of response.stream()) text += String(chunk);
  return { status: response.statusCode, json: JSON.parse(text), headers: response.headers };
}

async function call(ctx: MatrixContext, key: string, row: MatrixRow, caller: Caller, scope: 'own' | 'other' | undefined) {
  const [method, template] = key.split(' ');
  const params: Record<string, string> = { ...DEFAULT_PARAMS };
  if (typeof row.params === 'function') Object.assign(params, await row.params(ctx, caller));
  else Object.assign(params, row.params);
  if (row.workspace) {
    // a fresh workspace per request, so one request (delete, stop) cannot change what the next sees
    const owner = scope === 'own' && caller !== 'anonymous' ? ctx.users[caller] : ctx.users.other;
    params.owner = owner.username;
    params.name = await insertWorkspace(ctx, owner.userId);
  }
  const url = template.replace(/:(\w+)|\*/g, (match, name: string | undefined) => {
    const value = params[name ?? '*'];
    if (value === undefined) throw new Error(`${key}: no value for path parameter ${match}; add it to the row's params.`);
    return encodeURIComponent(value);
  });
  let token = caller === 'anonymous' ? undefined : ctx.users[caller].token;
  if (token && row.freshToken) {
    token = (await api(ctx.server.app, token).post('/api/v1/users/me/tokens', { name: 'matrix-throwaway' })).json.token;
  }
  const body = typeof row.body === 'function' ? row.body(ctx) : row.body;
  if (row.stream) return openStream(ctx, url, token);
  return api(ctx.server.app, token).request(method, url, ['GET', 'DELETE'].includes(method) ? undefined : (body ?? {}));
}

function describeRow(row: MatrixRow): string {
  return `${row.auth}${row.workspace ? ', own vs. other workspace' : ''}${row.expect ? ', checks its own credentials' : ''}`;
}

function templateFiles(name: string): Record<string, string> {
  return { 'template.yaml': `name: ${name}\nworkspace:\n  image: den/base\n` };
}

/** Pushes a template through the API (as the owner) and returns its name. */
async function pushTemplate(ctx: MatrixContext, name: string): Promise<string> {
  const pushed = await api(ctx.server.app, ctx.users.owner.token).post('/api/v1/templates', { files: templateFiles(name) });
  if (pushed.status !== 201) throw new Error(`pushing template ${name} failed: ${pushed.status} ${JSON.stringify(pushed.json)}`);
  return name;
}

async function templateIds(ctx: MatrixContext, name: string): Promise<{ templateId: string; versionId: string }> {
  const row = await ctx.server.store.db.selectFrom('templates').select(['id', 'active_version_id']).where('name', '=', name).executeTakeFirstOrThrow();
  return { templateId: row.id, versionId: row.active_version_id! };
}

// Workspace rows go straight into the store: this test is about who may call what, and a
// stopped workspace is all the routes need (creating one through the API would queue a build).
async function insertWorkspace(ctx: MatrixContext, ownerId: string): Promise<string> {
  const now = iso(new Date());
  const name = `ws-${++ctx.counter}`;
  await ctx.server.store.db.insertInto('workspaces').values({
    id: crypto.randomUUID(), name, owner_id: ownerId, template_id: ctx.templateVersion.templateId,
    template_version_id: ctx.templateVersion.versionId, params_json: '{}', status: 'stopped',
    last_build_id: null, created_at: now, updated_at: now, deleted_at: null,
  }).execute();
  return name;
}
