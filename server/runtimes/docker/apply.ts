import { AppError } from '../../../protocol/errors.ts';
import type { DriverContext, WorkspaceIdentity } from '../driver.ts';
import { engineMessage, ignoreMissing, statusOf, type ContainerApi, type ContainerSpec, type DockerApi } from './docker-api.ts';
import { LABEL_KIND, LABEL_SERVICE, LABEL_SPEC, LABEL_WORKSPACE, labelFilter, labelsFor, names, type ObjectKind } from './objects.ts';

/**
 * Applying rendered objects to the engine, each step idempotent (the build worker may re-run a
 * verb after a crash): create-if-missing for networks and volumes, replace-if-changed for
 * containers (the den.spec label is a hash of the rendered spec).
 */

/** Makes sure the image is present, pulling it if not; a failure becomes one sentence. */
export async function ensureImage(docker: DockerApi, image: string, context: DriverContext): Promise<void> {
  try {
    await docker.getImage(image).inspect();
    return;
  } catch (error) {
    if (statusOf(error) !== 404) throw error;
  }
  if (image.startsWith('den/')) {
    // den's own images live on no registry; a pull would only send a request off the machine.
    throw new AppError('RUNTIME_ERROR',
      `The image ${image} is not on this Docker engine. den's images are built locally: run \`npm run images\` on the Docker host, then start the workspace again.`);
  }
  context.log(`Pulling image ${image}.`);
  try {
    const stream = await docker.pull(image);
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(stream, (error, output) => {
        const failed = (output as { error?: string }[] | undefined)?.find((event) => event.error);
        if (error || failed) reject(error ?? new Error(failed!.error));
        else resolve();
      });
    });
  } catch (error) {
    throw new AppError('RUNTIME_ERROR',
      `The image ${image} is not on this Docker engine and pulling it failed (${engineMessage(error)}). Build it (for den's images: npm run images) or fix the image name in the template.`,
      { cause: error });
  }
  context.log(`Pulled image ${image}.`);
}

export async function ensureNetwork(docker: DockerApi, instance: string, workspace: WorkspaceIdentity): Promise<string> {
  const name = names.network(workspace.id);
  try {
    const existing = await docker.getNetwork(name).inspect();
    assertOurs(existing.Labels, workspace, `network ${name}`);
    return name;
  } catch (error) {
    if (statusOf(error) !== 404) throw error;
  }
  await docker.createNetwork({
    Name: name, Driver: 'bridge', CheckDuplicate: true, Labels: labelsFor(instance, workspace, 'network'),
    Options: { 'com.docker.network.bridge.name': names.bridge(workspace.id) },
  })
    .catch((error: unknown) => { if (statusOf(error) !== 409) throw error; });
  return name;
}

/** Creates the volume if missing; returns true when it was created now. */
export async function ensureVolume(docker: DockerApi, instance: string, workspace: WorkspaceIdentity, name: string, kind: ObjectKind, extra: Record<string, string> = {}): Promise<boolean> {
  try {
    const existing = await docker.getVolume(name).inspect();
    assertOurs(existing.Labels, workspace, `volume ${name}`);
    return false;
  } catch (error) {
    if (statusOf(error) !== 404) throw error;
  }
  await docker.createVolume({ Name: name, Labels: labelsFor(instance, workspace, kind, extra) });
  return true;
}

/**
 * Starts a container for spec: keeps a running one with the same spec, replaces anything else
 * den made under that name, refuses to touch a container that is not this workspace's.
 * `secretEnv` is asked for only when a container is created: its values are not part of the
 * spec hash, and a kept container goes on with the ones it has.
 */
export async function runContainer(
  docker: DockerApi, workspace: WorkspaceIdentity, hashed: ContainerSpec, secretEnv?: () => Promise<string[]>,
): Promise<{ container: ContainerApi; reused: boolean }> {
  const existing = docker.getContainer(hashed.name);
  const info = await ignoreMissing(existing.inspect());
  if (info) {
    assertOurs(info.Config.Labels, workspace, `container ${hashed.name}`);
    if (info.State.Running && info.Config.Labels?.[LABEL_SPEC] === hashed.Labels[LABEL_SPEC]) return { container: existing, reused: true };
    await ignoreMissing(existing.remove({ force: true }));
  }
  const spec: ContainerSpec = secretEnv ? { ...hashed, Env: [...(hashed.Env ?? []), ...(await secretEnv())] } : hashed;
  const container = await docker.createContainer(spec).catch(async (error: unknown) => {
    if (statusOf(error) !== 409) throw error;
    // Someone created it between inspect and create: only ours may be replaced.
    const raced = await docker.getContainer(spec.name).inspect();
    assertOurs(raced.Config.Labels, workspace, `container ${spec.name}`);
    await ignoreMissing(docker.getContainer(spec.name).remove({ force: true }));
    return docker.createContainer(spec);
  });
  await container.start();
  return { container, reused: false };
}

/** Removes the workspace's containers (workspace first, then services in reverse start order). */
export async function removeContainers(docker: DockerApi, instance: string, workspaceId: string, graceSeconds: number, context?: DriverContext): Promise<void> {
  const containers = await docker.listContainers({ all: true, filters: labelFilter(instance, workspaceId) });
  const rank = (kind: string | undefined) => (kind === 'workspace' ? 0 : 1);
  containers.sort((a, b) => rank(a.Labels[LABEL_KIND]) - rank(b.Labels[LABEL_KIND]));
  const services = containers.filter((c) => c.Labels[LABEL_KIND] !== 'workspace');
  const workspace = containers.filter((c) => c.Labels[LABEL_KIND] === 'workspace');
  for (const group of [workspace, services]) {
    // Services stop together: the workspace, their only client, is already gone.
    await Promise.all(group.map(async (summary) => {
      const container = docker.getContainer(summary.Id);
      if (summary.State === 'running') {
        const kind = summary.Labels[LABEL_KIND];
        context?.log(`Stopping ${kind === 'workspace' ? 'the workspace container' : kind === 'one-off' ? `a one-off container from service ${summary.Labels['den.service']}'s image` : `service ${summary.Labels['den.service']}`}.`);
        await ignoreMissing(container.stop({ t: graceSeconds }));
      }
      await ignoreMissing(container.remove({ force: true }));
    }));
  }
}

/**
 * Removes the service containers of a workspace whose service is no longer in its plan (a
 * template update dropped it); their volumes stay, as on stop, until the workspace is deleted.
 */
export async function removeUnplannedServices(
  docker: DockerApi, instance: string, workspaceId: string, planned: ReadonlySet<string>, graceSeconds: number, context: DriverContext,
): Promise<void> {
  const containers = await docker.listContainers({ all: true, filters: labelFilter(instance, workspaceId) });
  const unplanned = containers.filter((c) => c.Labels[LABEL_KIND] === 'service' && !planned.has(c.Labels[LABEL_SERVICE] ?? ''));
  await Promise.all(unplanned.map(async (summary) => {
    context.log(`Removing service ${summary.Labels[LABEL_SERVICE]}, which the plan no longer has.`);
    const container = docker.getContainer(summary.Id);
    if (summary.State === 'running') await ignoreMissing(container.stop({ t: graceSeconds }));
    await ignoreMissing(container.remove({ force: true }));
  }));
}

export async function removeNetwork(docker: DockerApi, instance: string, workspaceId: string): Promise<void> {
  const networks = await docker.listNetworks({ filters: labelFilter(instance, workspaceId) });
  for (const network of networks) await ignoreMissing(docker.getNetwork(network.Id).remove());
}

export async function removeVolumes(docker: DockerApi, instance: string, workspaceId: string): Promise<void> {
  const { Volumes } = await docker.listVolumes({ filters: labelFilter(instance, workspaceId) });
  for (const volume of Volumes ?? []) {
    await ignoreMissing(docker.getVolume(volume.Name).remove()).catch((error: unknown) => {
      throw new AppError('RUNTIME_ERROR', `Volume ${volume.Name} could not be removed (${engineMessage(error)}). Remove the container that still uses it and delete the workspace again.`, { cause: error });
    });
  }
}

/** Every workspace id den has any container, network or volume for. */
export async function workspaceIds(docker: DockerApi, instance: string): Promise<Set<string>> {
  const filters = labelFilter(instance);
  const [containers, networks, volumes] = await Promise.all([
    docker.listContainers({ all: true, filters }),
    docker.listNetworks({ filters }),
    docker.listVolumes({ filters }),
  ]);
  const ids = new Set<string>();
  for (const labels of [...containers.map((c) => c.Labels), ...networks.map((n) => n.Labels), ...(volumes.Volumes ?? []).map((v) => v.Labels)]) {
    const id = labels?.[LABEL_WORKSPACE];
    if (id) ids.add(id);
  }
  return ids;
}

function assertOurs(labels: Record<string, string> | null | undefined, workspace: WorkspaceIdentity, what: string): void {
  if (labels?.[LABEL_WORKSPACE] === workspace.id) return;
  throw new AppError('RUNTIME_ERROR',
    `A Docker ${what} already exists and does not belong to this workspace, so den leaves it alone. Remove or rename it (docker ${what.split(' ')[0]} rm ${what.split(' ')[1]}) and start the workspace again.`);
}
