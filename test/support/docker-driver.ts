import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Dockerode from 'dockerode';
import { pino } from 'pino';
import type { RuntimeDriver } from '../../server/runtimes/driver.ts';

/** Why a docker test cannot run here (no engine, an image missing), or undefined when it can. */
export async function dockerSkipReason(docker: Dockerode, images: string[]): Promise<string | undefined> {
  try {
    await docker.ping();
  } catch {
    return 'no Docker engine is reachable (run bash test/services/docker.sh)';
  }
  for (const image of images) {
    if (!(await docker.getImage(image).inspect().then(() => true, () => false))) return `the image ${image} is missing (run npm run images)`;
  }
  return undefined;
}

/**
 * The docker runtime for a test server (startTestServer's `driver`): its own instance name, so
 * it touches only its own containers, and a fresh agent bundle directory, pushed to `dirs` for
 * the test to remove.
 */
export function testDockerDriver(docker: Dockerode, dirs: string[]): () => Promise<RuntimeDriver> {
  return async () => {
    const bundle = mkdtempSync(join(tmpdir(), 'den-docker-test-'));
    dirs.push(bundle);
    const { createDockerDriver } = await import('../../server/runtimes/docker/driver.ts');
    return createDockerDriver({ log: pino({ level: 'silent' }), docker: docker as never, agentBundleDir: join(bundle, 'agent'), stopGraceSeconds: 2, instance: `den-test-${randomUUID().slice(0, 8)}` });
  };
}
