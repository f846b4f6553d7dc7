import type Dockerode from 'dockerode';

/**
 * Why a suite that needs the Docker engine and some of den's images cannot run here, or
 * undefined when it can: the suite prints it and reports a skipped test, which CI refuses.
 */
export async function dockerSkipReason(docker: Dockerode, images: readonly string[]): Promise<string | undefined> {
  try {
    await docker.ping();
  } catch {
    return 'no Docker engine is reachable (run bash test/services/docker.sh)';
  }
  const missing = (await Promise.all(images.map(async (image) => (await docker.getImage(image).inspect().then(() => true, () => false)) ? undefined : image)))
    .filter((image): image is string => image !== undefined);
  return missing.length > 0 ? `the images ${missing.join(' and ')} are missing (run npm run images)` : undefined;
}
