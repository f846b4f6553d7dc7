import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { parse as parseYaml, stringify } from 'yaml';
import { errorEnvelopeSchema } from '../../protocol/errors.ts';
import type { FuzzTarget } from './fuzz-server.ts';
import { hostileJson, mutatedTree, mutatedYaml, nastyString, valueForSchema, type JsonSchema } from './fuzz-gen.ts';
import { startTestServer, type TestServer } from './harness.ts';
import { setupOwner } from './users.ts';
import { seedWorkspace } from './workspace-seed.ts';

const TEMPLATES_DIR = join(import.meta.dirname, '..', '..', 'templates');
/** The example templates: valid documents for mutations to start from. */
export const templateCorpus = readdirSync(TEMPLATES_DIR)
  .filter((name) => statSync(join(TEMPLATES_DIR, name)).isDirectory())
  .map((name) => readFileSync(join(TEMPLATES_DIR, name, 'template.yaml'), 'utf8'));

/** A template document: mutated as a tree (valid YAML, wrong in places) or as text. */
export const mutatedDocument: fc.Arbitrary<string> = fc.oneof(
  mutatedTree(fc.constantFrom(...templateCorpus).map((text) => parseYaml(text))).map((tree) => stringify(tree)),
  mutatedYaml(templateCorpus),
);

/**
 * The API under body fuzzing: a real server (in-process requests), an owner's API token, every
 * request/response route from the OpenAPI document, and a workspace with a finished build and an
 * environment service for the log streams. A case fails on a 500, or a 4xx without the error
 * envelope. Shared by test/fuzz.test.ts and `npm run fuzz`.
 */
export interface BodyFuzzWorld {
  server: TestServer;
  targets: FuzzTarget<any>[];
  /** DEN_FUZZ_VERBOSE=1: how the answers spread over routes, statuses and codes */
  tally: Map<string, number>;
  /** pushes answered 201: some mutated documents must stay valid, or the corpus broke */
  templatesCreated: number;
  close(): Promise<void>;
}

type Route = { method: string; path: string; body?: JsonSchema };

export async function startBodyFuzzWorld(): Promise<BodyFuzzWorld> {
  const server = await startTestServer({ startWorkers: false, config: { maxTemplateBytes: 128 * 1024 } });
  const owner = await setupOwner(server.app);
  const openapi = server.app.swagger() as { paths: Record<string, Record<string, { requestBody?: { content?: Record<string, { schema?: JsonSchema }> } }>> };
  const routes: Route[] = Object.entries(openapi.paths)
    .flatMap(([path, methods]) => Object.entries(methods).map(([method, operation]) => ({
      method: method.toUpperCase(),
      path,
      body: operation.requestBody?.content?.['application/json']?.schema,
    })))
    // Not request/response: websockets and log streams (their own target below); logout ends the fuzzer's own token.
    .filter(({ path }) => path.startsWith('/api/v1/') && !/agent|terminal|connect|logout|\/logs|ssh\/|stream|events/.test(path));

  // a workspace of the owner whose build is finished (a follow ends) and whose template declares a service
  const logs = await seedWorkspace(server.store.db, { username: owner.username, userId: owner.userId, workspaceName: 'logs' });
  await server.store.db.updateTable('builds').set({ state: 'succeeded' }).where('id', '=', logs.buildId).execute();
  const version = await server.store.db.selectFrom('workspaces').select('template_version_id').where('id', '=', logs.workspaceId).executeTakeFirstOrThrow();
  await server.store.db.updateTable('template_versions')
    .set({ spec_json: JSON.stringify({ environment: { services: { db: { image: 'x' } } } }) })
    .where('id', '=', version.template_version_id).execute();
  server.den.builds.logs.append(logs.buildId, { stream: 'stdout', step: 'fuzz', line: 'a line' });
  await server.den.builds.logs.flush();

  const tally = new Map<string, number>();
  const send = async (method: string, url: string, payload: unknown, options: { raw?: boolean; headers?: Record<string, string> } = {}) => {
    const response = await server.app.inject({
      method: method as 'POST',
      url,
      headers: { authorization: `Bearer ${owner.token}`, ...(payload !== undefined ? { 'content-type': 'application/json' } : {}), ...options.headers },
      ...(payload === undefined ? {} : { payload: options.raw ? (payload as string) : JSON.stringify(payload) }),
    });
    if (process.env.DEN_FUZZ_VERBOSE) {
      const key = `${method} ${url.split('?')[0].split('/').slice(0, 5).join('/')} ${response.statusCode} ${response.statusCode >= 400 ? (response.json() as { error?: { code?: string } }).error?.code : ''}`;
      tally.set(key, (tally.get(key) ?? 0) + 1);
    }
    const where = `${method} ${url} with ${JSON.stringify(payload)?.slice(0, 300)}`;
    if (response.statusCode >= 500) throw new Error(`${where} answered ${response.statusCode}: ${response.body.slice(0, 500)}`);
    if (response.statusCode >= 400 && !errorEnvelopeSchema.safeParse(safeJson(response.body)).success) {
      throw new Error(`${where} answered ${response.statusCode} without the error envelope: ${response.body.slice(0, 300)}`);
    }
    return response;
  };

  // Raw percent sequences (invalid UTF-8, NUL) as well as encoded random text.
  const segment = fc.oneof(
    { weight: 1, arbitrary: fc.constantFrom('%ff', '%00', '%E0%A4%A', '%2e%2e', '..', '%2F') },
    { weight: 4, arbitrary: fc.oneof(fc.constantFrom('demo', 'owner', 'starter', '1', '0', '-1', '99999999999'), nastyString.map((text) => text.slice(0, 80).toWellFormed() || 'x')).map(encodeURIComponent) },
  );
  // mostly values a route accepts, so many cases stream; some that it must refuse
  const queryValue = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom('1', '0', 'true', 'false', 'sse', 'ndjson', '5') },
    { weight: 1, arbitrary: fc.oneof(fc.constantFrom('yes', '-1', '1e999', '', '99999999999', '%ff', '%00'), nastyString.map((text) => encodeURIComponent(text.toWellFormed()))) },
  );

  const targets: FuzzTarget<any>[] = [
    {
      name: 'template pushes',
      arbitrary: fc.oneof(
        { weight: 1, arbitrary: hostileJson(3) },
        { weight: 1, arbitrary: mutatedTree(fc.constantFrom(...templateCorpus).map((text) => ({ files: { 'template.yaml': text, 'a/b.txt': 'x' }, message: 'm', activate: true }))) },
        { weight: 2, arbitrary: fc.record({ files: fc.record({ 'template.yaml': mutatedDocument }), activate: fc.boolean() }) },
      ),
      async run(body: unknown) {
        if ((await send('POST', '/api/v1/templates', body)).statusCode === 201) world.templatesCreated++;
      },
    },
    {
      name: 'raw request bodies',
      arbitrary: fc.oneof(
        fc.constantFrom('{', '[', 'nul', '"\\u0000"', '{"files": {"template.yaml": 1}}', '{"__proto__": {"x": 1}}', '{"constructor": {"prototype": {"x": 1}}}',
          `${'['.repeat(5000)}${']'.repeat(5000)}`, `{"files": {"template.yaml": "${'x'.repeat(200 * 1024)}"}}`, '\u0000\u0001', ''),
        fc.string({ unit: 'binary', maxLength: 64 }),
      ),
      async run(raw: string) {
        await send('POST', '/api/v1/templates', raw, { raw: true });
      },
    },
    {
      name: 'route bodies',
      arbitrary: fc.constantFrom(...routes).chain((route) => fc.record({
        route: fc.constant(route),
        segments: fc.array(segment, { minLength: 4, maxLength: 4 }),
        // Half shaped by the route's own body schema (to reach the domain code), half noise.
        body: route.method === 'GET' || route.method === 'DELETE' ? fc.constant(undefined) : fc.oneof(valueForSchema(route.body), mutatedTree(valueForSchema(route.body)), hostileJson(3)),
      })),
      async run({ route, segments, body }: { route: Route; segments: string[]; body: unknown }) {
        let index = 0;
        await send(route.method, route.path.replace(/\{[^}]+\}/g, () => segments[index++ % segments.length]), body);
      },
    },
    {
      name: 'log streams (build and service logs, follow)',
      arbitrary: fc.record({
        kind: fc.constantFrom('build', 'service'),
        build: fc.oneof(fc.constant('1'), segment),
        service: fc.oneof(fc.constant('db'), segment),
        query: fc.array(fc.tuple(fc.constantFrom('follow', 'follow', 'after', 'format', 'tail', 'x', '__proto__'), queryValue), { maxLength: 3 }),
        accept: fc.constantFrom(undefined, 'text/event-stream', 'application/x-ndjson', '*/*'),
      }),
      async run({ kind, build, service, query, accept }: { kind: string; build: string; service: string; query: [string, string][]; accept?: string }) {
        // a follow streams until its build finishes: builds the route fuzzing queued here (workers are off) never would
        await server.store.db.updateTable('builds').set({ state: 'canceled' }).where('workspace_id', '=', logs.workspaceId).where('state', 'in', ['queued', 'running']).execute();
        const base = `/api/v1/workspaces/${owner.username}/logs/${kind === 'build' ? `builds/${build}` : `services/${service}`}/logs`;
        const url = query.length === 0 ? base : `${base}?${query.map(([key, value]) => `${key}=${value}`).join('&')}`;
        const response = await send('GET', url, undefined, { headers: accept ? { accept } : {} });
        if (response.statusCode !== 200) return;
        const type = String(response.headers['content-type']);
        for (const line of response.body.split('\n')) {
          if (line === '' || type.startsWith('text/event-stream')) continue;
          if (safeJson(line) === undefined) throw new Error(`${url} streamed a line that is not JSON: ${line.slice(0, 200)}`);
        }
      },
    },
  ];
  const world: BodyFuzzWorld = { server, targets, tally, templatesCreated: 0, close: () => server.close() };
  return world;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
