import { join } from 'node:path';
import type { Logger } from 'pino';
import type { Config } from '../config.ts';
import type { RuntimeDriver } from './driver.ts';

/** Loads only the driver the configuration asks for, so unused SDKs are never imported. */
export async function createDriver(config: Config, log: Logger): Promise<RuntimeDriver> {
  switch (config.runtime) {
    case 'process': {
      const { createProcessDriver } = await import('./process/driver.ts');
      return createProcessDriver({ dataDir: config.dataDir, log, requireSandbox: config.requireSandbox });
    }
    case 'docker': {
      const { createDockerDriver } = await import('./docker/driver.ts');
      return createDockerDriver({ log, agentBundleDir: join(config.dataDir, 'docker', 'agent-bundle'), instance: config.instance });
    }
    case 'kubernetes': {
      const { createKubernetesDriver } = await import('./kubernetes/driver.ts');
      return createKubernetesDriver({
        log, dataDir: config.dataDir, instance: config.instance, kubeconfig: config.kubeconfig, context: config.kubeContext,
        agentUrl: config.agentAccessUrl, downloaderImage: config.kubeDownloaderImage,
      });
    }
  }
}
