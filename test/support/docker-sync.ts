import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import { expect } from 'vitest';
import type { SyncStatus } from '../../protocol/sync.ts';
import { runDen, type DenResult } from './den-cli.ts';
import { startTestServer, type TestServer } from './harness.ts';
import { syncProbe, treeListing } from './sync.ts';
import { api, setupOwner, type Api, type TestUser } from './users.ts';

/** What the live sync tests on the docker runtime share: a server with the docker driver, the CLI, the sync status. */
const SYNC_TIMEOUT_MS = 30_000;
const CLI_TIMEOUT_MS = 60_000;
export const SYNC_IMAGE = 'den/node:24';

export const docker = new Dockerode();

/** Why the docker sync tests cannot run here, or undefined when they can. */
export async function dockerSyncSkip(): Promise<string | undefined> {
  return docker.ping()
    .then(() => docker.getImage(SYNC_IMAGE).inspect().then(() => undefined, () => `the image ${SYNC_IMAGE} is missing (run npm run images)`),
      () => 'no Docker engine is reachable (run bash test/services/docker.sh)');
}

export interface DockerSyncHarness {
  server: TestServer;
  user: TestUser;
  client: Api;
  /** the docker driver's instance label: the containers of this test carry den.instance=<instance> */
  instance: string;
  den(args: string[]): Promise<DenResult>;
  /** runs a script in the workspace (or a service) through `den exec`, expecting status 0 */
  sh(workspace: string, script: string, service?: string): Promise<string>;
  syncOf(workspace: string, service: string): Promise<SyncStatus>;
  /** waits until the service's sync is watching with nothing pending and both hashes equal (after `since`, a batch number) */
  settled(workspace: string, service: string, since?: number): Promise<SyncStatus>;
  close(): Promise<void>;
}

export async function startDockerSyncHarness(): Promise<DockerSyncHarness> {
  const instance = `den-test-${randomUUID().slice(0, 8)}`;
  const server = await startTestServer({
    listen: true,
    driver: async () => {
      const { createDockerDriver } = await import('../../server/runtimes/docker/driver.ts');
      return createDockerDriver({
        log: pino({ level: 'silent' }), docker: docker as never, agentBundleDir: join(mkdtempSync(join(tmpdir(), 'den-sync-')), 'agent'),
        stopGraceSeconds: 2, instance,
      });
    },
  });
  const user = await setupOwner(server.app);
  const client = api(server.app, user.token);
  const homes: string[] = [];

  const den = async (args: string[]): Promise<DenResult> => {
    const home = mkdtempSync(join(tmpdir(), 'den-sync-cli-'));
    homes.push(home);
    return runDen(args, { PATH: process.env.PATH!, HOME: home, XDG_CONFIG_HOME: home, DEN_URL: server.url!, DEN_TOKEN: user.token }, CLI_TIMEOUT_MS);
  };
  const sh = async (workspace: string, script: string, service?: string): Promise<string> => {
    const result = await den(['exec', ...(service ? ['--service', service] : []), '-T', workspace, '--', 'sh', '-c', script]);
    expect(result, result.stderr).toMatchObject({ code: 0 });
    return result.stdout;
  };
  const { syncOf, settled } = syncProbe(client, user.username, SYNC_TIMEOUT_MS);
  return {
    server, user, client, instance, den, sh, syncOf, settled,
    async close() {
      await server.close();
      for (const home of homes) rmSync(home, { recursive: true, force: true });
    },
  };
}

/** Every path under `dir` with its type, mode, symlink target and content hash, sorted: the same listing in any container. */
export const listing = treeListing;
