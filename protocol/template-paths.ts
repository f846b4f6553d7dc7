import type { TemplateSpec } from './template-fields.ts';

/**
 * Paths a template names (service workdirs, volume mount points, sync paths, task inputs) are
 * used by den on the host and in containers, some of them as root: a workdir of
 * `~/../../../tmp/x` once made the process runtime create a directory outside the workspace.
 * Each path has a place it belongs to, and anything that leaves it is refused: at push time
 * (withoutExpressions) and again at plan time on the value the expressions evaluate to. Pure,
 * no Node imports, like the rest of protocol/.
 */

/**
 * - `home`: in the workspace home: `~/app`, `~`, or `app` (relative to the home);
 * - `mount`: an absolute directory in the service's container, not `/` itself;
 * - `home-or-container`: either of the above (`/app` in a container, `~/app` in the home);
 * - `relative`: relative to another path of the template (sync excludes), never leaving it.
 */
export type TemplatePathKind = 'home' | 'mount' | 'home-or-container' | 'relative';

export interface TemplatePath {
  /** field path in the template, as zod issues have it */
  path: (string | number)[];
  value: string;
  kind: TemplatePathKind;
}

/** Every path the template names, with the place it belongs to. */
export function templatePaths(spec: TemplateSpec): TemplatePath[] {
  const out: TemplatePath[] = [];
  for (const [name, service] of Object.entries(spec.environment?.services ?? {})) {
    const at = (...rest: (string | number)[]) => ['environment', 'services', name, ...rest];
    if (service.workdir !== undefined) out.push({ path: at('workdir'), value: service.workdir, kind: 'home-or-container' });
    service.volumes?.forEach((volume, index) => out.push({ path: at('volumes', index, 'path'), value: volume.path, kind: 'mount' }));
    service.sync?.forEach((sync, index) => {
      out.push({ path: at('sync', index, 'from'), value: sync.from, kind: 'home' });
      out.push({ path: at('sync', index, 'to'), value: sync.to, kind: 'home-or-container' });
      sync.exclude?.forEach((exclude, excludeIndex) => out.push({ path: at('sync', index, 'exclude', excludeIndex), value: exclude, kind: 'relative' }));
    });
  }
  for (const kind of ['tasks', 'tests'] as const) {
    for (const [name, entry] of Object.entries(spec.environment?.[kind] ?? {})) {
      entry.inputs?.forEach((input, index) => out.push({ path: ['environment', kind, name, 'inputs', index], value: input, kind: 'home-or-container' }));
    }
  }
  return out;
}

/**
 * A path as written in the template, with each `${{ }}` expression standing in as a plain name:
 * at push time only what the literal text already decides can be refused.
 */
export function withoutExpressions(value: string): string {
  return value.replace(/\$\{\{[\s\S]*?\}\}/g, 'x');
}

/** Why `text` is not a path of its kind, as a sentence that says what to write instead; undefined when it is fine. */
export function templatePathProblem(text: string, kind: TemplatePathKind): string | undefined {
  if (/[\u0000-\u001f\u007f]/.test(text)) return 'A path cannot contain control characters (NUL, line breaks, tabs); remove them.';
  if (text === '') return 'The path is empty; write a path such as ~/app or /app.';
  if (/^~[^/]/.test(text)) return `'${text.split('/')[0]}' would be another user's home; write ~/ for the workspace home.`;
  const inHome = text === '~' || text.startsWith('~/');
  const absolute = text.startsWith('/');
  if (kind === 'relative' && (inHome || absolute)) return 'Write a path relative to the synced folder, such as node_modules or dist/cache.';
  if (kind === 'home' && absolute) return 'Write a path in the workspace home, such as ~/app; an absolute path would point outside it.';
  if (kind === 'mount' && !absolute) return "Write an absolute path in the service's container, such as /data.";
  const segments = (inHome ? text.slice(1) : text).split('/').filter((segment) => segment !== '' && segment !== '.');
  let depth = 0;
  for (const segment of segments) {
    depth += segment === '..' ? -1 : 1;
    if (depth < 0) {
      if (absolute) return "'..' climbs above / here; write the path without it.";
      if (kind === 'relative') return "'..' leaves the synced folder; write a path inside it.";
      return "'..' leaves the workspace home; write a path that stays inside it, such as ~/app.";
    }
  }
  if (kind === 'mount' && depth === 0) return 'A volume cannot be mounted over /; choose a directory such as /data.';
  return undefined;
}
