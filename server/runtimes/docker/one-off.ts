import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { AppError } from '../../../protocol/errors.ts';
import type { OneOffRequest, OneOffResult, WorkspaceIdentity } from '../driver.ts';
import { ignoreMissing, type ContainerApi, type ContainerInfo, type ContainerSpec, type DockerApi } from './docker-api.ts';
import {
  CONTAINER_LOG, DNS_OPTIONS, HOME_PATH, LABEL_DEADLINE, LABEL_KIND, LABEL_SERVICE, LABEL_WORKSPACE, labelFilter, labelsFor, names,
} from './objects.ts';

/**
 * A one-off container left behind (den stopped mid-run) is removed by the garbage collector
 * this long after its deadline; until then the run that started it removes it itself.
 */
export const ONE_OFF_GC_GRACE_MS = 60_000;

/**
 * Runs a command in a fresh container from a running service's image (RuntimeDriver.runOneOff):
 * its image, environment, user and working directory are read from the service's container, so
 * the one-off has what the plan gave the service; it joins the workspace's network (services
 * by name) and mounts the workspace's home read-only at /home/den. No agent: the engine's log
 * stream carries the output, `wait` the exit status. Removed (SIGKILL) at its time limit or
 * when `signal` aborts, and always once it ended; it carries its deadline as a label for
 * removeExpiredOneOffs.
 */
export async function runOneOffContainer(docker: DockerApi, instance: string, workspace: WorkspaceIdentity, request: OneOffRequest): Promise<OneOffResult> {
  const service = await ignoreMissing(docker.getContainer(names.service(workspace.id, request.service)).inspect());
  if (!service || service.Config.Labels?.[LABEL_WORKSPACE] !== workspace.id || !service.State.Running) {
    throw new AppError('WORKSPACE_NOT_RUNNING',
      `Service ${request.service} of ${workspace.ownerName}/${workspace.name} is not running, so den has no image and environment to start a one-off container from. Start the workspace (den start ${workspace.ownerName}/${workspace.name}) and try again.`);
  }
  const deadline = Date.now() + request.timeoutMs;
  const container = await docker.createContainer(oneOffContainerSpec(instance, workspace, request, service, deadline));
  let timedOut = false;
  let ended = false;
  let removing: Promise<unknown> | undefined;
  const remove = () => {
    removing ??= ignoreMissing(container.remove({ force: true })).catch(() => undefined);
    return removing;
  };
  const kill = () => {
    if (!ended) void remove();
  };
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, request.timeoutMs);
  request.signal?.addEventListener('abort', kill, { once: true });
  try {
    if (request.signal?.aborted) return { exitCode: undefined, timedOut: false };
    await container.start();
    const output = await streamOutput(docker, container, request.onOutput);
    const { StatusCode } = await container.wait().catch(() => ({ StatusCode: -1 }));
    ended = true;
    await output.ended;
    const endedByDen = timedOut || request.signal?.aborted === true;
    return { exitCode: endedByDen || StatusCode < 0 ? undefined : StatusCode, timedOut };
  } finally {
    ended = true;
    clearTimeout(timer);
    request.signal?.removeEventListener('abort', kill);
    await remove();
  }
}

export function oneOffContainerSpec(instance: string, workspace: WorkspaceIdentity, request: OneOffRequest, service: ContainerInfo, deadline: number): ContainerSpec {
  const network = names.network(workspace.id);
  return {
    name: names.oneOff(workspace.id, request.service, randomBytes(4).toString('hex')),
    Image: service.Config.Image,
    Entrypoint: request.command,
    Cmd: [],
    Env: service.Config.Env ?? [],
    ...(service.Config.User ? { User: service.Config.User } : {}),
    ...(service.Config.WorkingDir ? { WorkingDir: service.Config.WorkingDir } : {}),
    Labels: labelsFor(instance, workspace, 'one-off', { [LABEL_SERVICE]: request.service, [LABEL_DEADLINE]: String(deadline) }),
    HostConfig: {
      Mounts: [{ Type: 'volume', Source: names.home(workspace.id), Target: HOME_PATH, ReadOnly: true }],
      NetworkMode: network,
      Privileged: false,
      Init: true,
      DnsOptions: DNS_OPTIONS,
      LogConfig: CONTAINER_LOG,
    },
  };
}

/** Follows the container's output from its start; resolves when the stream ends (the container exited or was removed). */
async function streamOutput(docker: DockerApi, container: ContainerApi, onOutput: OneOffRequest['onOutput']): Promise<{ ended: Promise<void> }> {
  const stream = await container.logs({ follow: true, stdout: true, stderr: true });
  const sink = (name: 'stdout' | 'stderr') => new Writable({
    write(chunk: Buffer, _encoding, done) {
      onOutput(name, chunk.toString('utf8'));
      done();
    },
  });
  docker.modem.demuxStream(stream, sink('stdout'), sink('stderr'));
  const ended = new Promise<void>((resolve) => {
    stream.once('end', () => resolve());
    stream.once('close', () => resolve());
    stream.once('error', () => resolve());
  });
  return { ended };
}

/**
 * One-off containers past their deadline (and the grace): left by a den that stopped mid-run.
 * Run by the garbage collector; a run in progress on any replica is before its deadline.
 */
export async function removeExpiredOneOffs(docker: DockerApi, instance: string, now: number): Promise<number> {
  const containers = await docker.listContainers({ all: true, filters: labelFilter(instance) });
  const expired = containers.filter((c) => c.Labels[LABEL_KIND] === 'one-off' && !(Number(c.Labels[LABEL_DEADLINE]) + ONE_OFF_GC_GRACE_MS > now));
  await Promise.all(expired.map((c) => ignoreMissing(docker.getContainer(c.Id).remove({ force: true })).catch(() => undefined)));
  return expired.length;
}
