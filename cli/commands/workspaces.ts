import type { WorkspaceTransition } from '../../client/workspaces.ts';
import type { BuildDto, BuildLogLine, WorkspaceDto, WorkspaceWithBuild } from '../../protocol/workspaces.ts';
import type { AppHealthDto, WorkspacePortsDto } from '../../protocol/apps.ts';
import { servicePreviews } from '../../protocol/previews.ts';
import type { ShareLevel, TemplateSpec } from '../../protocol/template-fields.ts';
import { describeBuild, followBuild, formatLogLine, refText, renderStepTimings } from '../build-progress.ts';
import { connect, type Session } from '../context.ts';
import { parseWorkspaceRef, type WorkspaceRef } from '../refs.ts';
import { ExitCode, UsageError } from '../errors.ts';
import { parseParams } from '../params.ts';
import { formatAge, note, print, printJson, printTable, renderFields, renderTable } from '../output.ts';

/** `den create|list|show|events|start|stop|restart|update|delete|cancel`. */

interface WaitOptions {
  wait?: boolean;
  json?: boolean;
}

export async function create(name: string, options: WaitOptions & { template: string; param: string[]; owner?: string }): Promise<void> {
  const params = parseParams(options.param, '--param');
  const session = connect();
  if (name.includes('/')) {
    // `den create alice/demo` reads naturally; it means --owner alice.
    const parsed = parseWorkspaceRef(name);
    if (options.owner && parsed.owner && options.owner !== parsed.owner) {
      throw new UsageError(`'${name}' names owner '${parsed.owner}' but --owner says '${options.owner}'. Give the owner once.`);
    }
    options.owner ??= parsed.owner;
    name = parsed.name;
  }
  const result = await session.client.workspaces.create({ name, template: options.template, params, owner: options.owner });
  await reportTransition(session, result, 'create', options);
}

/** `den start|stop|restart|update|delete WS` share one shape: queue a build, optionally follow it. */
export function transition(verb: WorkspaceTransition) {
  return async (reference: string, options: WaitOptions & { param?: string[] }): Promise<void> => {
    const params = options.param ? parseParams(options.param, '--param') : undefined;
    const session = connect();
    const ref = await session.workspaceRef(reference);
    const result = await session.client.workspaces.transition(ref.owner, ref.name, verb, params ? { params } : {});
    await reportTransition(session, result, verb, options);
  };
}

/** `den cancel WS [--wait]`: cancel the queued or running build; with --wait, until it has ended. */
export async function cancel(reference: string, options: WaitOptions): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const result = await session.client.workspaces.cancel(ref.owner, ref.name);
  let build = result.build;
  if (options.wait && build.state !== 'canceled') {
    build = (await followBuild(session.client, ref, build.number, () => undefined)) ?? build;
  }
  const workspace = options.wait ? await finalWorkspace(session, ref, build) : result.workspace;
  if (options.json) return printJson({ workspace: workspace ?? result.workspace, build });
  if (build.state === 'canceled') {
    print(`${describeBuild(build)} ${refText(ref)} is ${workspace?.status ?? 'deleted'}.`);
  } else if (options.wait) {
    // The build did its last step before the cancel reached it.
    note(`${describeBuild(build)} It ended before the cancel took effect.`);
    throw new ExitCode(1);
  } else {
    print(`Canceling build #${build.number} (${build.transition}) of ${refText(ref)}. Wait for it with \`den cancel ${await shortRef(session, ref)} --wait\` or follow it with \`den logs ${await shortRef(session, ref)} -f\`.`);
  }
}

export async function list(options: { all?: boolean; json?: boolean; watch?: boolean }): Promise<void> {
  const session = connect();
  const { workspaces, total } = await session.client.workspaces.list({ all: options.all, limit: 500 });
  if (options.json) printJson(workspaces);
  else await printWorkspaces(session, workspaces, total, options);
  if (!options.watch) return;
  const names = new Map(workspaces.map((w) => [w.id, `${w.owner}/${w.name}`]));
  const { watchWorkspaces } = await import('./watch.ts');
  await watchWorkspaces(session.client, { ...options, names });
}

async function printWorkspaces(session: Session, workspaces: WorkspaceDto[], total: number, options: { all?: boolean }): Promise<void> {
  const me = options.all ? undefined : await session.username().catch(() => undefined);
  const showOwner = options.all || workspaces.some((workspace) => workspace.owner !== me);
  printTable(
    workspaces,
    [
      { header: 'name', value: (w) => (showOwner ? `${w.owner}/${w.name}` : w.name) },
      { header: 'template', value: (w) => `${w.template}@v${w.templateVersion}${w.outdated ? ' (outdated)' : ''}` },
      { header: 'status', value: (w) => (w.health?.state === 'down' ? `${w.status} (down)` : w.status) },
      { header: 'agent', value: (w) => w.agentState },
      { header: 'last build', value: (w) => (w.latestBuild ? `#${w.latestBuild.number} ${w.latestBuild.transition} ${w.latestBuild.state}` : '') },
      { header: 'updated', value: (w) => formatAge(w.updatedAt) },
    ],
    options.all ? 'There are no workspaces.' : 'You have no workspaces. Create one with `den create NAME --template TEMPLATE`.',
  );
  if (total > workspaces.length) note(`(showing ${workspaces.length} of ${total})`);
}

export async function show(reference: string, options: { json?: boolean }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const [workspace, { sessions: sshSessions }] = await Promise.all([
    session.client.workspaces.get(ref.owner, ref.name),
    session.client.workspaces.sshSessions(ref.owner, ref.name),
  ]);
  if (options.json) return printJson({ ...workspace, sshSessions });
  const build = workspace.latestBuild;
  print(
    renderFields([
      ['workspace', `${workspace.owner}/${workspace.name}`],
      ['status', workspace.status],
      ['agent', workspace.agentState],
      ...(workspace.health ? [['health', `${workspace.health.state} since ${workspace.health.at}: ${workspace.health.message}`] as [string, string]] : []),
      ['template', `${workspace.template} version ${workspace.templateVersion}${workspace.outdated ? ' (a newer version is active; run `den update`)' : ''}`],
      ['last build', build ? `#${build.number} ${build.transition} ${build.state}${build.error ? `: ${build.error}` : ''}` : 'none'],
      ['created', `${workspace.createdAt} (${formatAge(workspace.createdAt)})`],
      ['updated', `${workspace.updatedAt} (${formatAge(workspace.updatedAt)})`],
      ['last activity', workspace.lastActivityAt ? `${workspace.lastActivityAt} (${formatAge(workspace.lastActivityAt)}, SSH)` : 'none'],
      ...(workspace.isolation ? [['isolation', workspace.isolation.sandboxed ? 'sandboxed' : 'NOT isolated'] as [string, string]] : []),
    ]),
  );
  if (workspace.isolation?.warning) print(`\nWarning: ${workspace.isolation.warning}`);
  if (workspace.agents && workspace.agents.length > 0) {
    print('\nAgents:');
    print(renderTable(workspace.agents, [
      { header: 'name', value: (a) => a.name },
      { header: 'beside', value: (a) => (a.service ? `service ${a.service}` : 'the workspace') },
      { header: 'state', value: (a) => a.state ?? '-' },
      { header: 'connection', value: (a) => (a.connected ? `connected since ${a.connectedAt}` : a.disconnectedAt ? `disconnected since ${a.disconnectedAt}` : 'never connected') },
    ]));
  }
  if (sshSessions.length > 0) {
    print('\nSSH sessions:');
    for (const ssh of sshSessions) print(`  ${ssh.user} from ${ssh.remoteAddress} via ${ssh.via === 'tunnel' ? 'den ssh' : 'the SSH port'} since ${ssh.since} (${formatAge(ssh.since)}), ${ssh.channels} channel${ssh.channels === 1 ? '' : 's'}`);
  }
  await printWhereToGo(session, workspace);
  const params = Object.entries(workspace.params);
  if (params.length > 0) {
    print('\nParameters:');
    for (const [key, value] of params) print(`  ${key} = ${typeof value === 'string' ? value : JSON.stringify(value)}`);
  }
}

/**
 * The URLs a user opens (the workspace's page, its browser terminal), then its apps and
 * environment services' previews with their URLs through den, the other ports listening in it
 * (while its agent is connected), and the environment services with their ports.
 */
async function printWhereToGo(session: Session, workspace: WorkspaceDto): Promise<void> {
  const base = `${session.client.url}/@${encodeURIComponent(workspace.owner)}/${encodeURIComponent(workspace.name)}`;
  print(`\nOpen:\n  dashboard  ${base}\n  terminal   ${base}/terminal${workspace.status === 'running' ? '' : ' (once the workspace is running)'}`);
  // the server knows the URLs (subdomain mode when it has a wildcard domain), the share levels, the health and the listening ports
  const listed = await session.client.workspaces.ports(workspace.owner, workspace.name).catch(() => undefined);
  let spec: TemplateSpec;
  try {
    spec = (await session.client.templates.version(workspace.template, workspace.templateVersion)).spec as TemplateSpec;
  } catch {
    printOtherPorts(listed);
    return; // the version was deleted, or the caller may not read templates: the URLs above are what matters
  }
  const apps = spec.workspace?.apps ?? [];
  const previews = servicePreviews(spec);
  if (apps.length + previews.length > 0) {
    print('\nApps (`den ports WORKSPACE` lists every listening port; `den share` shares them):');
    const declared = [...apps, ...previews.map((preview) => ({ ...preview, path: undefined, displayName: `preview of service ${preview.service}` }))];
    for (const app of declared) {
      const known = listed?.apps.find((entry) => entry.name === app.name);
      const url = known ? known.url : `${base}/apps/${encodeURIComponent(app.name)}/`;
      const facts = [`port ${app.port}`, ...(known ? [`shared with ${known.share}`] : []), ...(known?.health ? [healthText(known.health)] : [])];
      print(`  ${app.name}  ${url}${app.path && app.path !== '/' ? app.path.slice(1) : ''}  ${facts.join(', ')}${app.displayName ? `  ${app.displayName}` : ''}`);
    }
  }
  printOtherPorts(listed);
  const services = Object.entries(spec.environment?.services ?? {});
  if (services.length > 0) {
    print('\nServices (reach them from the workspace; logs with `den logs WORKSPACE --service NAME`):');
    for (const [name, service] of services) {
      const ports = (service.ports ?? []).map((port) => `${port.port}${port.name ? `/${port.name}` : ''}`).join(', ');
      print(`  ${name}${ports ? `  port ${ports}` : ''}`);
    }
  }
}

/** The ports listening in the workspace that are not an app of its template, once each, with their URLs through den. */
function printOtherPorts(listed: WorkspacePortsDto | undefined): void {
  const others = (listed?.ports ?? []).filter((port, index, all) => port.app === undefined && all.findIndex((other) => other.port === port.port) === index);
  if (others.length === 0) return;
  print('\nPorts listening in the workspace (`den ports WORKSPACE` lists them all):');
  for (const port of others) print(`  ${port.port}  ${port.url}  shared with ${port.share}`);
}

export async function ports(reference: string, options: { json?: boolean }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const listing = await session.client.workspaces.ports(ref.owner, ref.name);
  if (options.json) return printJson(listing);
  if (listing.apps.length > 0) {
    print('Apps:');
    print(renderTable(listing.apps, [
      { header: 'name', value: (a) => a.name },
      { header: 'port', value: (a) => String(a.port) },
      { header: 'share', value: (a) => a.share },
      { header: 'health', value: (a) => (a.health ? healthText(a.health) : '') },
      { header: 'service', value: (a) => a.service ?? '' },
      { header: 'url', value: (a) => a.url },
    ]));
  }
  if (!listing.detected) {
    note('The workspace\'s agent is not connected, so its listening ports are unknown. Start it with `den start`.');
    return;
  }
  if (listing.apps.length > 0) print('');
  printTable(
    listing.ports,
    [
      { header: 'port', value: (p) => String(p.port) },
      { header: 'address', value: (p) => p.address },
      { header: 'app', value: (p) => p.app ?? '' },
      { header: 'url', value: (p) => p.url },
    ],
    'Nothing listens on a TCP port in the workspace.',
  );
}

export async function share(reference: string, target: string, options: { level: string; json?: boolean }): Promise<void> {
  // the server checks the level (zod at its edge), so this command does not load zod
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const shared = await session.client.workspaces.share(ref.owner, ref.name, target, options.level as ShareLevel);
  if (options.json) return printJson(shared);
  print(`${/^\d+$/.test(target) ? 'Port' : 'App'} ${target} of ${ref.owner}/${ref.name} is shared with ${shared.level === 'owner' ? 'its owner only' : shared.level === 'authenticated' ? 'every signed-in den user' : 'anyone with the URL'}: ${shared.url}`);
  if (shared.level !== 'owner' && shared.url.includes('/@')) note('Sharing takes effect on subdomain URLs only (den server --apps-wildcard-domain); path URLs stay owner-only.');
}

export async function events(reference: string, options: { json?: boolean }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const { events } = await session.client.workspaces.events(ref.owner, ref.name);
  if (options.json) return printJson(events);
  printTable(
    events,
    [
      { header: 'time', value: (e) => `${e.ts} (${formatAge(e.ts)})` },
      { header: 'kind', value: (e) => e.kind },
      { header: 'message', value: (e) => e.message },
    ],
    `Nothing to report for ${ref.owner}/${ref.name}.`,
  );
}

async function reportTransition(session: Session, result: WorkspaceWithBuild, verb: WorkspaceTransition | 'create', options: WaitOptions): Promise<void> {
  const ref: WorkspaceRef = { owner: result.workspace.owner, name: result.workspace.name };
  const shown = await shortRef(session, ref);
  if (!options.wait) {
    if (options.json) return printJson(result);
    print(`${capitalise(summaryVerb(verb))} ${refText(ref)}: build #${result.build.number} (${result.build.transition}) is ${result.build.state}. Follow it with \`den logs ${shown} -f\`.`);
    return;
  }

  note(`${capitalise(progressive(verb))} ${refText(ref)} (build #${result.build.number})...`);
  const write = (line: BuildLogLine) => note(formatLogLine(line));
  let build = await followBuild(session.client, ref, result.build.number, write);
  // A restart is a stop build that the server chains a start build onto once it succeeded.
  while (build?.state === 'succeeded' && build.transition === 'stop' && build.reason === 'restart') {
    const next = await chainedBuild(session, ref, build.number);
    note(`\nBuild #${next} (start) follows.`);
    build = await followBuild(session.client, ref, next, write);
  }
  if (build === null) {
    // Only a delete makes the workspace disappear under its own build.
    if (options.json) return printJson({ workspace: { ...result.workspace, status: 'deleted' }, build: result.build });
    print(`Deleted ${refText(ref)}.`);
    return;
  }
  const timings = renderStepTimings(build);
  if (timings) note(`\n${timings.trimEnd()}`);
  const workspace = await finalWorkspace(session, ref, build);
  if (options.json) printJson({ workspace: workspace ?? result.workspace, build });
  if (build.state !== 'succeeded') {
    note(describeBuild(build));
    note(`See the whole log with \`den logs ${shown} --build ${build.number}\`.`);
    throw new ExitCode(1);
  }
  if (!options.json) {
    print(workspace ? `${describeBuild(build)} ${refText(ref)} is ${workspace.status}.` : `${describeBuild(build)} ${refText(ref)} is deleted.`);
  }
}

/** How long the server may take to queue the start half of a restart after its stop half. */
const CHAINED_BUILD_TIMEOUT_MS = 15_000;
const CHAINED_BUILD_POLL_MS = 200;

/** The number of the build queued after `number` (the start half of a restart). */
async function chainedBuild(session: Session, ref: WorkspaceRef, number: number): Promise<number> {
  const deadline = Date.now() + CHAINED_BUILD_TIMEOUT_MS;
  for (;;) {
    const latest = (await session.client.workspaces.get(ref.owner, ref.name)).latestBuild;
    if (latest && latest.number > number) return latest.number;
    if (Date.now() > deadline) {
      throw new UsageError(`The server stopped ${refText(ref)} but did not queue the start of the restart. Run \`den start ${ref.name} --wait\`.`, 1);
    }
    await new Promise((resolve) => setTimeout(resolve, CHAINED_BUILD_POLL_MS));
  }
}

/** The workspace after its build, or undefined once it was deleted. */
async function finalWorkspace(session: Session, ref: WorkspaceRef, build: BuildDto): Promise<WorkspaceDto | undefined> {
  try {
    return await session.client.workspaces.get(ref.owner, ref.name);
  } catch (error) {
    if (build.transition === 'delete' && (error as { code?: string }).code === 'WORKSPACE_NOT_FOUND') return undefined;
    throw error;
  }
}

/** `demo` for the caller's own workspace, `alice/demo` for someone else's: what to type next. */
async function shortRef(session: Session, ref: WorkspaceRef): Promise<string> {
  const me = await session.username().catch(() => undefined);
  return me === ref.owner ? ref.name : refText(ref);
}

function summaryVerb(verb: WorkspaceTransition | 'create'): string {
  return { create: 'created', start: 'starting', stop: 'stopping', restart: 'restarting', update: 'updating', delete: 'deleting' }[verb];
}

function progressive(verb: WorkspaceTransition | 'create'): string {
  return { create: 'creating', start: 'starting', stop: 'stopping', restart: 'restarting', update: 'updating', delete: 'deleting' }[verb];
}

function capitalise(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** `healthy`, `unhealthy (GET /health answered 500)` or `health unknown` */
function healthText(health: AppHealthDto): string {
  if (health.state === 'unknown') return 'health unknown';
  return health.message ? `${health.state} (${health.message})` : health.state;
}
