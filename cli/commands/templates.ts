import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, normalize, relative, resolve, sep } from 'node:path';
import type { ParameterSpec } from '../../protocol/template.ts';
import { connect } from '../context.ts';
import { UsageError } from '../errors.ts';
import { formatAge, note, print, printJson, printTable, renderFields } from '../output.ts';
import { readTemplateFolder } from '../template-folder.ts';

/** `den templates push|list|show|versions|activate|pull|schema`. */

export async function push(dir: string, options: { activate?: boolean; message: string; json?: boolean }): Promise<void> {
  const files = readTemplateFolder(dir);
  const session = connect();
  const result = await session.client.templates.push({ files, message: options.message || undefined, activate: options.activate });
  if (options.json) return printJson(result);
  const { template, version } = result;
  if (result.unchanged) {
    print(`${template.name} version ${version.number} (active) already has these files; nothing was pushed.`);
    return;
  }
  const state = version.active ? 'active' : `not active; activate it with \`den templates activate ${template.name} ${version.number}\``;
  print(`Pushed ${template.name} version ${version.number} (${state}).`);
}

export async function list(options: { json?: boolean }): Promise<void> {
  const { templates } = await connect().client.templates.list();
  if (options.json) return printJson(templates);
  printTable(
    templates,
    [
      { header: 'name', value: (t) => t.name },
      { header: 'display name', value: (t) => t.displayName },
      { header: 'active', value: (t) => (t.activeVersion === null ? 'none' : `v${t.activeVersion}`) },
      { header: 'versions', value: (t) => t.versions, align: 'right' },
      { header: 'workspaces', value: (t) => t.workspaces, align: 'right' },
      { header: 'updated', value: (t) => formatAge(t.updatedAt) },
    ],
    'There are no templates yet. Push one with `den templates push DIR --activate`.',
  );
}

export async function show(name: string, options: { version?: number; json?: boolean }): Promise<void> {
  const { client } = connect();
  const template = await client.templates.get(name);
  const number = options.version ?? template.activeVersion ?? template.versionList[0]?.number;
  const version = number === undefined || number === null ? undefined : await client.templates.version(name, number);
  if (options.json) {
    const { files: _files, ...versionWithoutFiles } = version ?? { files: undefined };
    return printJson({ ...template, version: version ? versionWithoutFiles : null });
  }
  print(
    renderFields([
      ['template', template.name],
      ['display name', template.displayName],
      ['description', template.description],
      ['active version', template.activeVersion === null ? 'none' : template.activeVersion],
      ['versions', template.versions],
      ['workspaces', template.workspaces],
      ['shown version', version ? `${version.number}${version.message ? ` (${version.message})` : ''}` : 'none'],
    ]),
  );
  const parameters = ((version?.spec as { parameters?: ParameterSpec[] } | undefined)?.parameters ?? []) as ParameterSpec[];
  if (parameters.length > 0) {
    print('\nParameters:');
    printTable(
      parameters,
      [
        { header: 'name', value: (p) => p.name },
        { header: 'type', value: (p) => p.type },
        { header: 'default', value: (p) => (p.default === undefined ? '(required)' : JSON.stringify(p.default)) },
        { header: 'mutable', value: (p) => p.mutable },
        { header: 'description', value: (p) => (p as { description?: string }).description },
      ],
      '',
    );
  }
}

export async function versions(name: string, options: { json?: boolean }): Promise<void> {
  const { versions: list } = await connect().client.templates.versions(name);
  if (options.json) return printJson(list);
  printTable(
    list,
    [
      { header: 'version', value: (v) => v.number, align: 'right' },
      { header: 'active', value: (v) => (v.active ? 'active' : '') },
      { header: 'workspaces', value: (v) => v.workspaces, align: 'right' },
      { header: 'created', value: (v) => formatAge(v.createdAt) },
      { header: 'by', value: (v) => v.createdBy },
      { header: 'message', value: (v) => v.message },
    ],
    `${name} has no versions.`,
  );
}

export async function activate(name: string, version: number): Promise<void> {
  await connect().client.templates.activate(name, version);
  print(`Version ${version} of ${name} is active. New workspaces use it; run \`den update WORKSPACE\` to move existing ones.`);
}

export async function pull(name: string, dir: string, options: { version?: number; force?: boolean }): Promise<void> {
  const { client } = connect();
  const number = options.version ?? (await activeVersion(client, name));
  const version = await client.templates.version(name, number);
  const root = resolve(dir);
  const targets = Object.entries(version.files).map(([path, content]) => [safeJoin(root, path), content] as const);
  const existing = targets.filter(([target]) => existsSync(target));
  if (existing.length > 0 && !options.force) {
    throw new UsageError(`${relative(process.cwd(), existing[0][0]) || existing[0][0]} already exists. Pull into an empty folder or pass --force to overwrite.`);
  }
  for (const [target, content] of targets) {
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, content);
  }
  note(`Wrote ${targets.length} file${targets.length === 1 ? '' : 's'} of ${name} version ${number} to ${dir}.`);
}

export async function schema(): Promise<void> {
  printJson(await connect().client.templates.schema());
}

async function activeVersion(client: ReturnType<typeof connect>['client'], name: string): Promise<number> {
  const template = await client.templates.get(name);
  if (template.activeVersion === null) {
    throw new UsageError(`${name} has no active version. Pick one with --version (see \`den templates versions ${name}\`).`, 1);
  }
  return template.activeVersion;
}

/** A pushed path under `root`; a path that would escape it (absolute, `..`) is refused rather than written. */
function safeJoin(root: string, path: string): string {
  const target = normalize(join(root, path));
  if (isAbsolute(path) || (target !== root && !target.startsWith(root + sep))) {
    throw new UsageError(`The template has a file outside its folder ('${path}'); refusing to write it.`, 1);
  }
  return target;
}
