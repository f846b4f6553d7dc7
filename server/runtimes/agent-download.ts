import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { assembleAgentBundleOnce } from './agent-bundle.ts';

const run = promisify(execFile);

/** The agent bundle as one tar file, for runtimes that fetch it (a Kubernetes init container). */
export interface AgentArchive {
  file: string;
  /** sha256 (hex) of the tar file: what a downloader checks before unpacking */
  sha256: string;
  size: number;
}

/** den's agent bundle route (server/agents/routes.ts), relative to the access URL. */
export const AGENT_BUNDLE_PATH = '/api/v1/agent/bundle';

/** The bundle as one tar, assembled on first use (see createAgentDownload). */
export interface AgentDownload {
  archive(): Promise<AgentArchive>;
  open(archive: AgentArchive): NodeJS.ReadableStream;
}

/**
 * Serves den's agent bundle (Node, agent, node-pty; see agent-bundle.ts) as a reproducible tar
 * (sorted names, fixed mtime and owner), assembled under `dir` on first use and reused after:
 * the same checkout gives the same bytes, so the checksum a plan names stays valid.
 */
export function createAgentDownload(dir: string): AgentDownload {
  let pending: Promise<AgentArchive> | undefined;
  const build = async (): Promise<AgentArchive> => {
    const bundle = assembleAgentBundleOnce(join(dir, 'bundles'));
    const file = join(dir, `agent-${bundle.hash.slice(0, 16)}.tar`);
    if (!existsSync(file)) {
      mkdirSync(dir, { recursive: true });
      const scratch = `${file}.${process.pid}.partial`;
      await run('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-cf', scratch, '-C', bundle.dir, '.']);
      renameSync(scratch, file);
    }
    const hash = createHash('sha256');
    for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
    return { file, sha256: hash.digest('hex'), size: statSync(file).size };
  };
  return {
    archive() {
      pending ??= build().catch((error: unknown) => {
        pending = undefined; // a failed assembly is tried again by the next request
        throw error;
      });
      return pending;
    },
    open(archive) {
      return createReadStream(archive.file);
    },
  };
}
