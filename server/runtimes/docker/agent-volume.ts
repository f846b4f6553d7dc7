import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { AGENT_MOUNT_PATH, assembleAgentBundle } from '../agent-bundle.ts';
import type { AgentDelivery } from '../driver.ts';
import { ignoreMissing, statusOf, type ContainerApi, type DockerApi } from './docker-api.ts';
import { LABEL_AGENT_BUNDLE, LABEL_KIND, LABEL_MANAGED, names } from './objects.ts';

/**
 * The read-only volume that carries the agent bundle into images that do not have it (or have
 * an older one). One volume per bundle hash, shared by all workspaces; filled once through a
 * created-but-never-started helper container (putArchive), with BUNDLE written last so a fill
 * interrupted by a crash is detected and redone.
 */
export interface AgentVolumes {
  /**
   * The volume to mount for an agent delivered this way into this image: always for 'volume';
   * for 'image' only when the image's bundle is not this one (undefined then). Also whether it is
   * one of den's images (which have /home/den owned by uid 1000).
   */
  volumeFor(image: string, delivery?: AgentDelivery): Promise<{ volume?: string; denImage: boolean }>;
  bundleHash(): string;
}

export function createAgentVolumes(docker: DockerApi, bundleDir: string): AgentVolumes {
  let hash: string | undefined;
  const filled = new Map<string, Promise<string>>();

  function bundleHash(): string {
    // Assembled once per driver from this checkout (the Node binary running den, dist/agent.mjs,
    // node-pty), so a rebuilt agent reaches new workspaces after a server restart.
    hash ??= assembleAgentBundle({ outDir: bundleDir }).hash;
    return hash;
  }

  return {
    bundleHash,
    async volumeFor(image, delivery = { kind: 'image' }) {
      if (delivery.kind !== 'image' && delivery.kind !== 'volume') {
        throw new Error(`The docker runtime cannot deliver the agent by ${delivery.kind}; the planner chose a way it does not offer (a bug in den).`);
      }
      const info = await docker.getImage(image).inspect();
      const baked = info.Config?.Labels?.[LABEL_AGENT_BUNDLE];
      if (baked === bundleHash() && delivery.kind === 'image') return { denImage: true };
      const volume = names.agentBundle(bundleHash());
      let fill = filled.get(volume);
      // Another den on the engine may have garbage-collected it as stale (an older or newer
      // bundle than its own) since it was filled: mounting a missing volume would silently
      // create an empty one, and the agent would never start.
      if (fill && !(await fill.then(() => volumeExists(docker, volume), () => false))) fill = undefined;
      if (!fill) {
        fill = fillVolume(docker, volume, bundleDir, bundleHash(), image);
        filled.set(volume, fill);
        fill.catch(() => filled.delete(volume));
      }
      return { volume: await fill, denImage: baked !== undefined };
    },
  };
}

async function fillVolume(docker: DockerApi, volume: string, bundleDir: string, hash: string, image: string): Promise<string> {
  await docker.createVolume({ Name: volume, Labels: { [LABEL_MANAGED]: 'true', [LABEL_KIND]: 'agent-bundle', [LABEL_AGENT_BUNDLE]: hash } });
  const helper = await docker.createContainer({
    name: `${volume}-fill-${process.pid}-${Date.now()}`,
    Image: image,
    Entrypoint: [`${AGENT_MOUNT_PATH}/node`],
    Cmd: [],
    Labels: { [LABEL_MANAGED]: 'true', [LABEL_KIND]: 'agent-bundle' },
    HostConfig: { Mounts: [{ Type: 'volume', Source: volume, Target: AGENT_MOUNT_PATH, VolumeOptions: { NoCopy: true } }], NetworkMode: 'none' },
  });
  try {
    if (!(await hasMarker(helper))) {
      // BUNDLE last: its presence means everything before it was written.
      const entries = readdirSync(bundleDir).filter((name) => name !== 'BUNDLE').sort();
      const tar = spawn('tar', ['-C', bundleDir, '-c', ...entries, 'BUNDLE'], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = new Promise<number | null>((resolve) => tar.once('close', resolve));
      await helper.putArchive(tar.stdout, { path: AGENT_MOUNT_PATH });
      if ((await exited) !== 0) throw new Error(`Packing the agent bundle in ${bundleDir} failed.`);
    }
  } finally {
    await ignoreMissing(helper.remove({ force: true }));
  }
  return volume;
}

async function volumeExists(docker: DockerApi, volume: string): Promise<boolean> {
  return (await ignoreMissing(docker.getVolume(volume).inspect())) !== undefined;
}

async function hasMarker(helper: ContainerApi): Promise<boolean> {
  try {
    const stream = await helper.getArchive({ path: `${AGENT_MOUNT_PATH}/BUNDLE` });
    stream.resume();
    return true;
  } catch (error) {
    if (statusOf(error) === 404) return false;
    throw error;
  }
}
