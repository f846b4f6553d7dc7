import { AppError } from '../../protocol/errors.ts';
import type { TemplateSpec } from '../../protocol/template.ts';

/**
 * How a runtime handles each template feature:
 *  - 'enforced': carried out as the template says;
 *  - 'ignored': accepted, and the workspace runs without it (the process runtime sets no
 *    resource limits and mounts no service volumes);
 *  - 'shared' (sync only): the services see the workspace's own files (the process runtime runs
 *    them in its home), so a sync of a folder onto the same path needs no copy and shows as
 *    `shared`; a sync into any other path is refused, since nothing would copy it;
 *  - 'unsupported': a workspace that needs it cannot work, so creating one is refused.
 * restartAfterSync (`afterSync: restart`) needs a service process den can restart in place:
 * docker runs it under den's supervisor (agent/supervise.ts); the others refuse it.
 */
export type CapabilitySupport = 'enforced' | 'ignored' | 'shared' | 'unsupported';

export type RuntimeFeature = 'serviceImages' | 'serviceVolumes' | 'resources' | 'dependsOn' | 'sync' | 'ports' | 'serviceAgents' | 'restartAfterSync' | 'oneOffRuns';

/** How a runtime can put the agent where it runs (see AgentDelivery in driver.ts). */
export type AgentDeliveryKind = 'image' | 'volume' | 'path' | 'download';

/** Declared by each driver as data, so the server can refuse a template before any build. */
export type RuntimeCapabilities = Readonly<Record<RuntimeFeature, CapabilitySupport>>;

export interface MissingCapability {
  feature: RuntimeFeature;
  /** the template field that needs it, e.g. environment.services.db */
  field: string;
  /** one sentence naming the feature, where the template uses it and the runtime */
  message: string;
}

/**
 * The features a template needs that the runtime does not have ('unsupported'), each with a
 * sentence. Pure: the create path calls it before any build, the start build again (a template
 * update may have added a feature).
 */
export function missingCapabilities(runtime: string, capabilities: RuntimeCapabilities, spec: TemplateSpec): MissingCapability[] {
  const missing: MissingCapability[] = [];
  const lacks = (feature: RuntimeFeature) => capabilities[feature] === 'unsupported';
  const add = (feature: RuntimeFeature, field: string, what: string) =>
    missing.push({ feature, field, message: `${field} ${what}, which the ${runtime} runtime does not support (${feature}).` });
  if (spec.workspace.resources && lacks('resources')) add('resources', 'workspace.resources', 'sets resource limits');
  for (const [name, service] of Object.entries(spec.environment?.services ?? {})) {
    const field = `environment.services.${name}`;
    if (service.command === undefined && lacks('serviceImages')) add('serviceImages', field, 'is given only as an image, without a command');
    if ((service.volumes?.length ?? 0) > 0 && lacks('serviceVolumes')) add('serviceVolumes', `${field}.volumes`, 'mounts volumes');
    if ((service.dependsOn?.length ?? 0) > 0 && lacks('dependsOn')) add('dependsOn', `${field}.dependsOn`, 'orders services');
    if ((service.sync?.length ?? 0) > 0 && lacks('sync')) add('sync', `${field}.sync`, 'syncs files from the workspace');
    if (capabilities.sync === 'shared') {
      (service.sync ?? []).forEach((sync, index) => {
        if (sameFolder(sync.from, sync.to)) return;
        missing.push({
          feature: 'sync',
          field: `${field}.sync[${index}]`,
          message: `${field}.sync[${index}] syncs ${sync.from} into ${sync.to}, which the ${runtime} runtime cannot do: its services run in the workspace's own home and see its files as they are, so only a folder synced onto the same path (to: ${sync.from}) works there.`,
        });
      });
    }
    if ((service.ports?.length ?? 0) > 0 && lacks('ports')) add('ports', `${field}.ports`, 'exposes ports');
    if (service.agent && lacks('serviceAgents')) add('serviceAgents', `${field}.agent`, 'asks for an agent beside the service');
    if (service.afterSync === 'restart' && lacks('restartAfterSync')) add('restartAfterSync', `${field}.afterSync`, 'restarts the service\'s process after each sync');
  }
  for (const kind of ['tasks', 'tests'] as const) {
    for (const [name, entry] of Object.entries(spec.environment?.[kind] ?? {})) {
      if (entry.oneOff && lacks('oneOffRuns')) add('oneOffRuns', `environment.${kind}.${name}.oneOff`, `runs in a one-off container from service ${entry.service}'s image`);
    }
  }
  return missing;
}

/** Whether a sync's two paths name the same folder of a shared home (`~/app`, `~/app/`, `app` are one). */
export function sameFolder(from: string, to: string): boolean {
  const normal = (path: string) => {
    const inHome = path === '~' ? '' : path.startsWith('~/') ? path.slice(2) : path.startsWith('/') ? undefined : path;
    return inHome === undefined ? `/${path.split('/').filter(Boolean).join('/')}` : `~/${inHome.split('/').filter((part) => part && part !== '.').join('/')}`;
  };
  return normal(from) === normal(to);
}

/** Throws RUNTIME_CAPABILITY_MISSING, naming every missing feature, when the runtime cannot run the template. */
export function assertCapabilities(runtime: { name: string; capabilities: RuntimeCapabilities }, spec: TemplateSpec): void {
  const missing = missingCapabilities(runtime.name, runtime.capabilities, spec);
  if (missing.length === 0) return;
  throw new AppError('RUNTIME_CAPABILITY_MISSING',
    `${missing.map((m) => m.message).join(' ')} Change the template, or ask your administrator for a server with a runtime that has it (docker runs services from images).`,
    { validations: missing.map((m) => ({ field: m.field, detail: m.message })) });
}
