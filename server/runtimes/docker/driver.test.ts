import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDriverContract } from '../driver.contract.ts';
import type { ServicePlan, StartContext, WorkspaceIdentity, WorkspacePlan } from '../driver.ts';
import type { DockerApi } from './docker-api.ts';
import { createAgentVolumes } from './agent-volume.ts';
import { createDockerDriver, type DockerDriver } from './driver.ts';
import { labelFilter, names } from './objects.ts';

const IMAGE = process.env.DEN_TEST_DOCKER_IMAGE ?? 'den/base:bookworm';
const AGENT_DIAL_TIMEOUT_MS = 20_000;
const run = promisify(execFile);
const docker = new Dockerode() as unknown as DockerApi;
const engine = await docker.ping().then(() => true, () => false);
const POSTGRES_IMAGE = 'den/postgres:15';
/** the debootstrap rootfs: Debian with no Node, no curl and no uid 1000 */
const ROOTFS_IMAGE = 'den/base-rootfs:bookworm';
const imagesPresent = engine && (await Promise.all([IMAGE, POSTGRES_IMAGE, ROOTFS_IMAGE].map((name) => docker.getImage(name).inspect().then(() => true, () => false)))).every(Boolean);
const skipReason = !engine
  ? 'no Docker engine is reachable (run bash test/services/docker.sh)'
  : !imagesPresent ? `the images ${IMAGE}, ${POSTGRES_IMAGE} and ${ROOTFS_IMAGE} are needed (run npm run images)` : undefined;
if (skipReason) console.warn(`[skip] Docker runtime tests: ${skipReason}.`);

/** This file's objects only: other test files and other dens share the engine. */
const INSTANCE = `den-test-${randomUUID().slice(0, 8)}`;
const bundleDirs: string[] = [];
function makeDriver(): Promise<DockerDriver> {
  const dir = mkdtempSync(join(tmpdir(), 'den-docker-test-'));
  bundleDirs.push(dir);
  return createDockerDriver({ log: pino({ level: 'silent' }), docker, agentBundleDir: join(dir, 'agent'), stopGraceSeconds: 2, instance: INSTANCE });
}
afterAll(() => { for (const dir of bundleDirs) rmSync(dir, { recursive: true, force: true }); });

if (!skipReason) runDriverContract('docker', () => makeDriver(), { image: IMAGE, concurrent: true });
// Reported as skipped (with the reason printed above) so CI, which forbids skips, notices.
else it.skip(`RuntimeDriver contract: docker (${skipReason})`);

describe.skipIf(skipReason !== undefined)('docker runtime', () => {
  let driver: DockerDriver;
  let fakeServer: Server;
  let agentUrl: string;
  const dialed = new Set<string>();
  const created: WorkspaceIdentity[] = [];

  beforeAll(async () => {
    driver = await makeDriver();
    // Stands in for the den server: records that an agent in a container connected at all.
    fakeServer = createServer((socket) => {
      socket.once('data', (chunk) => { dialed.add(chunk.toString('latin1')); socket.destroy(); });
    });
    await new Promise<void>((resolve) => fakeServer.listen(0, '127.0.0.1', resolve));
    agentUrl = `http://127.0.0.1:${(fakeServer.address() as { port: number }).port}`;
  });
  afterAll(async () => {
    for (const workspace of created) await driver?.delete(workspace, context()).catch(() => undefined);
    await driver?.close();
    fakeServer?.close();
  });

  it('lets a workspace reach its service by name, and a second workspace neither by name nor by address', async () => {
    const first = identity('with-api');
    const second = identity('neighbour');
    await driver.start(plan(first, [httpService('api')]), context());
    await driver.start(plan(second), context());

    expect(await fetchFrom(first, 'http://api:8080/')).toMatchObject({ code: 0, out: 'pong from api' });
    expect((await fetchFrom(second, 'http://api:8080/')).code).not.toBe(0);
    const address = await serviceAddress(first, 'api');
    expect((await fetchFrom(first, `http://${address}:8080/`)).out).toBe('pong from api');
    expect(await fetchFrom(second, `http://${address}:8080/`)).toMatchObject({ code: 1, out: '' });
  });

  it('keeps home and service volumes across stop and start, and delete removes every object', async () => {
    const workspace = identity('volumes');
    const db: ServicePlan = { ...httpService('db'), volumes: [{ name: 'data', path: '/data' }] };
    db.command = ['sh', '-c', 'sudo chown den /data; echo "$(cat /data/count 2>/dev/null)x" > /tmp/c; cp /tmp/c /data/count; exec node -e "require(\'http\').createServer((q, s) => s.end(require(\'fs\').readFileSync(\'/data/count\'))).listen(8080)"'];
    await driver.start(plan(workspace, [db]), context());
    await execIn(workspace, ['sh', '-c', 'echo kept > ~/proof.txt']);
    await driver.stop(workspace, context());
    expect((await driver.status(workspace)).phase).toBe('stopped');
    expect(await containersOf(workspace)).toHaveLength(0);

    await driver.start(plan(workspace, [db]), context());
    expect((await execIn(workspace, ['cat', '/home/den/proof.txt'])).out).toBe('kept\n');
    expect((await fetchFrom(workspace, 'http://db:8080/')).out).toBe('xx\n');

    await driver.delete(workspace, context());
    expect((await driver.status(workspace)).phase).toBe('absent');
    expect(await leftovers(workspace)).toEqual({ containers: 0, networks: 0, volumes: 0 });
  });

  it('starts services in dependsOn order, each after the one before is ready, with den/postgres:15 on a volume', async () => {
    const workspace = identity('environment');
    const db: ServicePlan = {
      name: 'db', image: POSTGRES_IMAGE, env: { POSTGRES_PASSWORD: 'den', POSTGRES_DB: 'app' }, dependsOn: [],
      ports: [{ port: 5432, preview: false }], volumes: [{ name: 'data', path: '/var/lib/postgresql/data' }],
      readiness: { tcp: 5432, timeoutMs: 60_000, intervalMs: 200 },
    };
    const api: ServicePlan = { ...httpService('api'), dependsOn: ['db'] };
    const lines: string[] = [];
    await driver.start(plan(workspace, [api, db]), { ...context(), log: (line) => lines.push(line) });
    const order = lines.filter((line) => /^(Started service|Service \S+ is ready)/.test(line));
    expect(order).toEqual(['Started service db (den/postgres:15).', 'Service db is ready.', 'Started service api (den/base:bookworm).', 'Service api is ready.'].map((line) => line.replace('den/base:bookworm', IMAGE)));
    expect(lines).toContain('[db] den-postgres: initialised /var/lib/postgresql/data (user postgres, database app)');
    const connects = await execIn(workspace, ['node', '-e', "require('net').connect(5432, 'db').on('connect', () => process.exit(0)).on('error', () => process.exit(1))"]);
    expect(connects.code).toBe(0);
  });

  it('starts the agent with the server URL rewritten so it reaches the den host through the bridge gateway', async () => {
    const workspace = identity('dials');
    await driver.start(plan(workspace), context());
    await waitFor(() => [...dialed].some((request) => request.includes('host.docker.internal')), AGENT_DIAL_TIMEOUT_MS, 'the agent to dial the server');
  });

  it('runs the agent from the read-only bundle volume in an image without Node, curl or a den user', async () => {
    const workspace = identity('plain-debian');
    dialed.clear();
    await driver.start({ ...plan(workspace), image: ROOTFS_IMAGE }, context());
    await waitFor(() => dialed.size > 0, AGENT_DIAL_TIMEOUT_MS, 'the agent to dial the server');
    expect(await execIn(workspace, ['sh', '-c', 'id -u; echo mine > "$HOME/file"; cat "$HOME/file"; command -v curl || echo no-curl'])).toEqual({ code: 0, out: '1000\nmine\nno-curl\n' });
    expect((await execIn(workspace, ['sh', '-c', 'touch /opt/den/agent/x'])).code).not.toBe(0);
  });

  it('fills the agent volume again when another den removed it as stale', async () => {
    // The shared volume is in use by other workspaces here, so the engine is made to answer
    // "no such volume" once, as it would after another den's collectGarbage removed it.
    const created: string[] = [];
    let hideOnce: string | undefined;
    const forgetful = new Proxy(docker, {
      get(target, key) {
        if (key === 'createVolume') return (spec: { Name: string; Labels: Record<string, string> }) => { created.push(spec.Name); return target.createVolume(spec); };
        if (key === 'getVolume') {
          return (name: string) => {
            if (name !== hideOnce) return target.getVolume(name);
            hideOnce = undefined;
            return { inspect: () => Promise.reject(Object.assign(new Error('no such volume'), { statusCode: 404 })), remove: () => Promise.resolve() };
          };
        }
        return Reflect.get(target, key);
      },
    });
    const volumes = createAgentVolumes(forgetful, join(bundleDirs[0], 'agent-refill'));
    const { volume } = await volumes.volumeFor(ROOTFS_IMAGE);
    expect(await volumes.volumeFor(ROOTFS_IMAGE)).toEqual({ volume, denImage: false });
    expect(created).toEqual([volume]);
    hideOnce = volume;
    expect(await volumes.volumeFor(ROOTFS_IMAGE)).toEqual({ volume, denImage: false });
    expect(created).toEqual([volume, volume]);
  });

  it('garbage-collects the objects of workspaces that no longer exist and keeps the others', async () => {
    const gone = identity('orphan');
    const kept = identity('kept');
    await driver.start(plan(gone), context());
    await driver.start(plan(kept), context());
    const removed = await driver.collectGarbage((id) => id !== gone.id);
    expect(removed).toEqual([gone.id]);
    expect(await leftovers(gone)).toEqual({ containers: 0, networks: 0, volumes: 0 });
    expect((await driver.status(kept)).phase).toBe('running');
  });

  it('collects only the garbage of its own instance: another den on the same engine leaves this one\'s objects alone', async () => {
    const other = await createDockerDriver({
      log: pino({ level: 'silent' }), docker, agentBundleDir: join(bundleDirs[0], 'agent-other'), stopGraceSeconds: 1, instance: `${INSTANCE}-other`,
    });
    const ours = identity('ours');
    const theirs = identity('theirs');
    await driver.start(plan(ours), context());
    await other.start(plan(theirs), context());
    try {
      // the other den knows none of our workspaces, so to it ours would be garbage if it could see them
      expect(await other.listWorkspaceIds()).not.toContain(ours.id);
      expect(await other.collectGarbage(() => false)).toEqual([theirs.id]);
      expect((await driver.status(ours)).phase).toBe('running');
      expect(await leftovers(ours)).toMatchObject({ containers: 1, networks: 1 });
      expect(await driver.listWorkspaceIds()).not.toContain(theirs.id);
    } finally {
      await other.delete(theirs, context()).catch(() => undefined);
      await other.close();
    }
  });

  it('fails a start with a sentence when the image does not exist, and leaves no container', async () => {
    const workspace = identity('no-image');
    // A registry on loopback: the pull fails at once and sends nothing off this machine.
    const failure = await failureOf(driver.start({ ...plan(workspace), image: '127.0.0.1:9/den/missing:1' }, context()));
    expect(failure.message).toMatch(/^The image 127\.0\.0\.1:9\/den\/missing:1 is not on this Docker engine and pulling it failed .*\. Build it/);
    expect(await containersOf(workspace)).toHaveLength(0);
  });

  it('does not try to pull den\'s own images, which no registry has, and says how to build them', async () => {
    const workspace = identity('unbuilt');
    const failure = await failureOf(driver.start({ ...plan(workspace), image: 'den/not-built:1' }, context()));
    expect(failure.message).toBe('The image den/not-built:1 is not on this Docker engine. den\'s images are built locally: run `npm run images` on the Docker host, then start the workspace again.');
  });

  it('fails a start with a sentence when a service exits, with its last log lines', async () => {
    const workspace = identity('exits');
    const broken: ServicePlan = { ...httpService('broken'), command: ['sh', '-c', 'echo missing configuration >&2; exit 3'] };
    const failure = await failureOf(driver.start(plan(workspace, [broken]), context()));
    expect(failure.message).toBe('Service broken failed to start: it exited with code 3. Check its image, command and readiness check in the template.');
    expect(failure.detail).toContain('missing configuration');
    expect(await containersOf(workspace)).toHaveLength(0);
  });

  it('leaves a container of the same name that is not the workspace\'s alone, and says so', async () => {
    const workspace = identity('clash');
    const squatter = await docker.createContainer({ name: names.workspace(workspace.id), Image: IMAGE, Labels: {}, HostConfig: { NetworkMode: 'none' } });
    try {
      const failure = await failureOf(driver.start(plan(workspace), context()));
      expect(failure.message).toBe(`A Docker container den-${workspace.id}-workspace already exists and does not belong to this workspace, so den leaves it alone. Remove or rename it (docker container rm den-${workspace.id}-workspace) and start the workspace again.`);
      expect((await squatter.inspect()).Name).toBe(`/${names.workspace(workspace.id)}`);
    } finally {
      await squatter.remove({ force: true });
    }
  });

  it('fails a start with a sentence when the Docker engine does not answer', async () => {
    const gone = await createDockerDriver({
      log: pino({ level: 'silent' }), agentBundleDir: join(bundleDirs[0], 'agent'),
      docker: new Dockerode({ socketPath: join(bundleDirs[0], 'no-engine.sock') }) as unknown as DockerApi,
    });
    const failure = await failureOf(gone.start(plan(identity('no-engine')), context()));
    expect(failure.message).toMatch(/^The Docker engine did not answer while starting the workspace \(.+\)\. Start it/);
    await gone.close();
  });

  it('fails a start with a sentence when the engine goes away mid-build, and leaves nothing once it is back', async () => {
    // The driver talks to the shared engine through a socket proxy this test cuts: the engine
    // itself (other tests use it) never stops.
    const proxy = await engineProxy(join(bundleDirs[0], 'engine-proxy.sock'));
    const cut = await createDockerDriver({
      log: pino({ level: 'silent' }), agentBundleDir: join(bundleDirs[0], 'agent'), stopGraceSeconds: 1, instance: INSTANCE,
      docker: new Dockerode({ socketPath: proxy.path }) as unknown as DockerApi,
    });
    try {
      const workspace = identity('engine-gone');
      const stuck: ServicePlan = {
        ...httpService('stuck'), command: ['sh', '-c', 'echo waiting forever; sleep 600'],
        readiness: { tcp: 8080, timeoutMs: 60_000, intervalMs: 200 },
      };
      const started = Promise.withResolvers<void>();
      const log = (line: string) => { if (line.startsWith('Started service stuck')) started.resolve(); };
      const failure = failureOf(cut.start(plan(workspace, [stuck]), { ...context(), log }));
      await started.promise;
      await proxy.cut();
      expect((await failure).message).toMatch(/^The Docker engine did not answer while starting the workspace \(.+\)\. Start it .* den removes what it had created on the next start or delete\.$/);

      await proxy.restore();
      await cut.delete(workspace, context());
      expect(await leftovers(workspace)).toEqual({ containers: 0, networks: 0, volumes: 0 });
    } finally {
      await cut.close();
      await proxy.cut();
    }
  });

  it('reports a workspace container killed for running out of memory as a failed phase with a sentence', async () => {
    const workspace = identity('oom');
    // Node needs about 40 MB, so the agent itself is OOM-killed in a 16 MiB container.
    const tiny = { ...plan(workspace), resources: { memoryBytes: 16 * 1024 ** 2 } };
    const failure = await driver.start(tiny, context()).then(() => undefined, (error: Error) => error.message);
    let message = failure;
    if (!message) {
      await waitFor(async () => (await driver.status(workspace)).phase === 'failed', AGENT_DIAL_TIMEOUT_MS, 'the container to be OOM-killed');
      message = (await driver.status(workspace)).message;
    }
    expect(message).toMatch(/it was killed because it ran out of memory; raise its memory limit in the template\.$/);
  });

  it('refuses a template that asks for more memory than the host has', async () => {
    const workspace = identity('too-big');
    const failure = await failureOf(driver.start({ ...plan(workspace), resources: { memoryBytes: 1024 ** 5 } }, context()));
    expect(failure.message).toMatch(/^The template asks for 1048576\.0 GiB of memory, but the Docker host has only [\d.]+ GiB\./);
  });

  function identity(name: string): WorkspaceIdentity {
    const workspace = { id: randomUUID(), name, ownerId: randomUUID(), ownerName: 'docker-test' };
    created.push(workspace);
    return workspace;
  }

  function plan(workspace: WorkspaceIdentity, services: ServicePlan[] = []): WorkspacePlan {
    return {
      workspace, image: IMAGE, resources: { cpu: 1, memoryBytes: 512 * 1024 ** 2, pids: 256 }, home: {},
      env: { DEN_WORKSPACE_NAME: workspace.name }, agent: { name: 'main', url: agentUrl, revision: 'r1', delivery: { kind: 'volume' } }, secrets: [{ name: 'agent-token', env: 'DEN_AGENT_TOKEN', agent: 'main' }], services,
    };
  }
});

function httpService(name: string): ServicePlan {
  return {
    name, image: IMAGE, env: { SERVICE_NAME: name }, volumes: [], dependsOn: [],
    command: ['node', '-e', `require('http').createServer((q, s) => s.end('pong from ' + process.env.SERVICE_NAME)).listen(Number(process.env.PORT))`],
    ports: [{ port: 8080, preview: false }],
    readiness: { http: { port: 8080, path: '/' }, timeoutMs: 20_000, intervalMs: 100 },
  };
}

/**
 * A unix socket relaying to the real engine's socket. cut() closes it and every connection
 * through it (to the driver, the engine is gone); restore() listens again at the same path.
 */
async function engineProxy(path: string): Promise<{ path: string; cut(): Promise<void>; restore(): Promise<void> }> {
  const engineSocket = process.env.DOCKER_HOST?.replace(/^unix:\/\//, '') || '/var/run/docker.sock';
  const open = new Set<Socket>();
  let server: Server | undefined;
  const restore = () => new Promise<void>((resolve, reject) => {
    server = createServer((client) => {
      const engine = connect(engineSocket);
      for (const socket of [client, engine]) {
        open.add(socket);
        socket.once('close', () => open.delete(socket));
        socket.on('error', () => { client.destroy(); engine.destroy(); });
      }
      client.pipe(engine).pipe(client);
    });
    server.once('error', reject).listen(path, resolve);
  });
  await restore();
  return {
    path,
    restore,
    async cut() {
      const closing = server ? new Promise<void>((resolve) => server!.close(() => resolve())) : Promise.resolve();
      server = undefined;
      for (const socket of open) socket.destroy();
      await closing;
    },
  };
}

async function failureOf(work: Promise<unknown>): Promise<Error & { detail?: string }> {
  try {
    await work;
  } catch (error) {
    return error as Error & { detail?: string };
  }
  throw new Error('Expected the start to fail, and it succeeded.');
}

function context(): StartContext {
  return { log: () => undefined, signal: new AbortController().signal, secret: async () => 'not-a-real-token' };
}

async function execIn(workspace: WorkspaceIdentity, command: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout } = await run('docker', ['exec', names.workspace(workspace.id), ...command]);
    return { code: 0, out: stdout };
  } catch (error) {
    return { code: (error as { code?: number }).code ?? 1, out: (error as { stdout?: string }).stdout ?? '' };
  }
}

/** GET from inside the workspace container; a 2 s timeout counts as "cannot reach". */
function fetchFrom(workspace: WorkspaceIdentity, url: string): Promise<{ code: number; out: string }> {
  return execIn(workspace, ['node', '-e', `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(2000) }).then((r) => r.text()).then((t) => process.stdout.write(t), () => process.exit(1))`]);
}

async function serviceAddress(workspace: WorkspaceIdentity, service: string): Promise<string> {
  const info = await docker.getContainer(names.service(workspace.id, service)).inspect();
  return info.NetworkSettings.Networks![names.network(workspace.id)].IPAddress!;
}

async function containersOf(workspace: WorkspaceIdentity): Promise<unknown[]> {
  return docker.listContainers({ all: true, filters: labelFilter(INSTANCE, workspace.id) });
}

async function leftovers(workspace: WorkspaceIdentity): Promise<{ containers: number; networks: number; volumes: number }> {
  const filters = labelFilter(INSTANCE, workspace.id);
  const [containers, networks, volumes] = await Promise.all([
    docker.listContainers({ all: true, filters }), docker.listNetworks({ filters }), docker.listVolumes({ filters }),
  ]);
  return { containers: containers.length, networks: networks.length, volumes: volumes.Volumes?.length ?? 0 };
}

async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}.`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
