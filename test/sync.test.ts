import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Dockerode from 'dockerode';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TemplateInput } from '../protocol/template.ts';
import { runDen, type DenResult } from './support/den-cli.ts';
import { startTestServer, type TestServer } from './support/harness.ts';
import { BURST_CHANGES, FIRST_CHANGES, MIRROR_EXCLUDE, MIRROR_PRUNE, syncProbe, treeListing } from './support/sync.ts';
import { readTemplateFolder, waitForWorkspaceReady } from './support/templates.ts';
import { api, setupOwner, type Api, type TestUser } from './support/users.ts';

/**
 * Live sync on the docker runtime, end to end: the real server, the real agents in real
 * containers, the node-api example. An edit in the workspace reaches the api service without a
 * rebuild and the api answers with the new code; deletes, renames, excludes, symlinks, modes and
 * a burst of 1,000 files converge (both agents' hashes agree, and a listing taken independently
 * in both containers is the same); a folder the service may not write stops that sync with a
 * sentence, in the status and as a workspace event.
 */
const READY_TIMEOUT_MS = 120_000;
const SYNC_TIMEOUT_MS = 30_000;
const CLI_TIMEOUT_MS = 60_000;
const IMAGE = 'den/node:24';

const docker = new Dockerode();
const dockerSkip = await docker.ping()
  .then(() => docker.getImage(IMAGE).inspect().then(() => undefined, () => `the image ${IMAGE} is missing (run npm run images)`),
    () => 'no Docker engine is reachable (run bash test/services/docker.sh)');
if (dockerSkip) console.warn(`[skip] live sync on the docker runtime: ${dockerSkip}.`);

const mirrorTemplate: TemplateInput = {
  name: 'sync-mirror',
  workspace: {
    image: IMAGE,
    startup: [{ name: 'src', run: 'mkdir -p "$HOME/src" && echo first > "$HOME/src/first.txt"', blocking: true }],
  },
  environment: {
    services: {
      mirror: {
        image: IMAGE,
        command: ['sleep', 'infinity'],
        sync: [{ from: '~/src', to: '/tmp/mirror', exclude: MIRROR_EXCLUDE }],
      },
      // /etc is root's: the service's user (den) cannot make a folder there
      locked: {
        image: IMAGE,
        command: ['sleep', 'infinity'],
        sync: [{ from: '~/src', to: '/etc/den-locked' }],
      },
    },
  },
};

describe('live sync on the docker runtime', { timeout: 300_000 }, () => {
  if (dockerSkip) {
    // reported as skipped with the reason printed above, so CI (which forbids skips) notices
    it.skip(`needs Docker: ${dockerSkip}`);
    return;
  }
  let server: TestServer;
  let user: TestUser;
  let client: Api;
  const homes: string[] = [];

  beforeAll(async () => {
    server = await startTestServer({
      listen: true,
      driver: async () => {
        const { createDockerDriver } = await import('../server/runtimes/docker/driver.ts');
        return createDockerDriver({
          log: pino({ level: 'silent' }), docker: docker as never, agentBundleDir: join(mkdtempSync(join(tmpdir(), 'den-sync-')), 'agent'),
          stopGraceSeconds: 2, instance: `den-test-${randomUUID().slice(0, 8)}`,
        });
      },
    });
    user = await setupOwner(server.app);
    client = api(server.app, user.token);
    for (const files of [readTemplateFolder(join(import.meta.dirname, '..', 'templates', 'node-api')), { 'template.yaml': JSON.stringify(mirrorTemplate) }]) {
      const pushed = await client.post('/api/v1/templates', { files, activate: true });
      expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    }
  });
  afterAll(async () => {
    await server?.close();
    for (const home of homes) rmSync(home, { recursive: true, force: true });
  });

  async function den(args: string[]): Promise<DenResult> {
    const home = mkdtempSync(join(tmpdir(), 'den-sync-cli-'));
    homes.push(home);
    return runDen(args, { PATH: process.env.PATH!, HOME: home, XDG_CONFIG_HOME: home, DEN_URL: server.url!, DEN_TOKEN: user.token }, CLI_TIMEOUT_MS);
  }

  async function sh(workspace: string, script: string, service?: string): Promise<string> {
    const result = await den(['exec', ...(service ? ['--service', service] : []), '-T', workspace, '--', 'sh', '-c', script]);
    expect(result, result.stderr).toMatchObject({ code: 0 });
    return result.stdout;
  }

  const probe = () => syncProbe(client, user.username, SYNC_TIMEOUT_MS);
  const syncOf = (workspace: string, service: string) => probe().syncOf(workspace, service);
  const settled = (workspace: string, service: string, since?: number) => probe().settled(workspace, service, since);

  it('node-api: an edit in the workspace reaches the api service without a rebuild, and the api answers with the new code', async () => {
    await den(['create', 'loop', '--template', 'node-api']);
    await waitForWorkspaceReady(client, user.username, 'loop', READY_TIMEOUT_MS);
    const first = await settled('loop', 'api');
    expect(first).toMatchObject({ from: '~/app', to: '~/app', watchMode: 'inotify', lastError: null });
    expect(first.sourceHash).toBe(first.targetHash);
    const fetchHello = 'node -e "fetch(process.env.API_URL + \'/hello\').then((r) => r.text()).then((t) => process.stdout.write(t))"';
    await expect.poll(() => sh('loop', fetchHello), { timeout: SYNC_TIMEOUT_MS, interval: 200 }).toBe('hello from the workspace\n');

    await sh('loop', `cat > ~/app/routes.js <<'EOF'\nmodule.exports = { '/hello': () => 'edited in the workspace, served by the api\\n' };\nEOF`);
    const after = await settled('loop', 'api', first.lastApplied!.batch);
    expect(after.lastApplied!.latencyMs).toBeGreaterThanOrEqual(0);
    await expect.poll(() => sh('loop', fetchHello), { timeout: SYNC_TIMEOUT_MS, interval: 200 }).toBe('edited in the workspace, served by the api\n');
    // the visit counter still works through the db: the api restarted, nothing was rebuilt
    expect(await sh('loop', 'node -e "fetch(process.env.API_URL).then((r) => r.text()).then((t) => process.stdout.write(t))"')).toMatch(/^hello from .*\/loop, visit \d+\n$/);
    const builds = (await client.get(`/api/v1/workspaces/${user.username}/loop/builds`)).json;
    expect(builds.builds ?? builds.items).toHaveLength(1);

    const status = await den(['sync', 'status', 'loop']);
    expect(status, status.stderr).toMatchObject({ code: 0 });
    expect(status.stdout).toMatch(/api\s+~\/app -> ~\/app\s+watching\s+0/);
  });

  it('converges deletes, renames, excludes, symlinks, modes and a burst of 1,000 files; an unwritable folder is a visible error', async () => {
    await den(['create', 'mirror', '--template', 'sync-mirror']);
    await waitForWorkspaceReady(client, user.username, 'mirror', READY_TIMEOUT_MS);

    // the folder the service may not write: stopped with a sentence, in the status and as an event
    await expect.poll(async () => (await syncOf('mirror', 'locked')).state, { timeout: SYNC_TIMEOUT_MS, interval: 200 }).toBe('error');
    expect((await syncOf('mirror', 'locked')).lastError).toMatch(/may not write \/etc\/den-locked/);
    const events = (await client.get(`/api/v1/workspaces/${user.username}/mirror/events`)).json.events as { kind: string; message: string }[];
    expect(events.find((e) => e.kind === 'sync.error')?.message).toMatch(/locked service stopped: .*may not write/);

    const first = await settled('mirror', 'mirror');
    await sh('mirror', FIRST_CHANGES);
    const second = await settled('mirror', 'mirror', first.lastApplied!.batch);
    await sh('mirror', BURST_CHANGES);
    const third = await settled('mirror', 'mirror', second.lastApplied!.batch);
    expect(third.sourceHash).toBe(third.targetHash);

    const inWorkspace = await sh('mirror', treeListing('~/src', MIRROR_PRUNE));
    const inService = await sh('mirror', treeListing('/tmp/mirror', MIRROR_PRUNE), 'mirror');
    expect(inService).toBe(inWorkspace);
    expect(inWorkspace.split('\n').filter((line) => line.startsWith('f ')).length).toBeGreaterThan(600);
    expect(inService).toContain('l 777 ./link-to-b -> lib/renamed.txt');
    expect(inService).toContain('f 600 ./lib/b.txt');
    expect(inService).toContain('f 755 ./run.sh');
    // excluded paths stay out of the service; a negated pattern is synced
    expect(await sh('mirror', 'ls -a /tmp/mirror', 'mirror')).not.toMatch(/node_modules|debug\.log/);
    expect(await sh('mirror', 'cat /tmp/mirror/keep.log', 'mirror')).toBe('kept\n');
  });
});
