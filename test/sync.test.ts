import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TemplateInput } from '../protocol/template.ts';
import { dockerSyncSkip, listing, startDockerSyncHarness, SYNC_IMAGE, type DockerSyncHarness } from './support/docker-sync.ts';
import { BURST_CHANGES, FIRST_CHANGES, MIRROR_EXCLUDE, MIRROR_PRUNE } from './support/sync.ts';
import { readTemplateFolder, waitForWorkspaceReady } from './support/templates.ts';

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
const IMAGE = SYNC_IMAGE;

const dockerSkip = await dockerSyncSkip();
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
  let harness: DockerSyncHarness;
  const den = (args: string[]) => harness.den(args);
  const sh = (workspace: string, script: string, service?: string) => harness.sh(workspace, script, service);
  const syncOf = (workspace: string, service: string) => harness.syncOf(workspace, service);
  const settled = (workspace: string, service: string, since?: number) => harness.settled(workspace, service, since);

  beforeAll(async () => {
    harness = await startDockerSyncHarness();
    for (const files of [readTemplateFolder(join(import.meta.dirname, '..', 'templates', 'node-api')), { 'template.yaml': JSON.stringify(mirrorTemplate) }]) {
      const pushed = await harness.client.post('/api/v1/templates', { files, activate: true });
      expect(pushed.status, JSON.stringify(pushed.json)).toBe(201);
    }
  });
  afterAll(async () => {
    await harness?.close();
  });

  it('node-api: an edit in the workspace reaches the api service without a rebuild, and the api answers with the new code', async () => {
    await den(['create', 'loop', '--template', 'node-api']);
    await waitForWorkspaceReady(harness.client, harness.user.username, 'loop', READY_TIMEOUT_MS);
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
    const builds = (await harness.client.get(`/api/v1/workspaces/${harness.user.username}/loop/builds`)).json;
    expect(builds.builds ?? builds.items).toHaveLength(1);

    const status = await den(['sync', 'status', 'loop']);
    expect(status, status.stderr).toMatchObject({ code: 0 });
    expect(status.stdout).toMatch(/api\s+~\/app -> ~\/app\s+watching\s+0/);
  });

  it('converges deletes, renames, excludes, symlinks, modes and a burst of 1,000 files; an unwritable folder is a visible error', async () => {
    await den(['create', 'mirror', '--template', 'sync-mirror']);
    await waitForWorkspaceReady(harness.client, harness.user.username, 'mirror', READY_TIMEOUT_MS);

    // the folder the service may not write: stopped with a sentence, in the status and as an event
    await expect.poll(async () => (await syncOf('mirror', 'locked')).state, { timeout: SYNC_TIMEOUT_MS, interval: 200 }).toBe('error');
    expect((await syncOf('mirror', 'locked')).lastError).toMatch(/may not write \/etc\/den-locked/);
    const events = (await harness.client.get(`/api/v1/workspaces/${harness.user.username}/mirror/events`)).json.events as { kind: string; message: string }[];
    expect(events.find((e) => e.kind === 'sync.error')?.message).toMatch(/locked service stopped: .*may not write/);

    const first = await settled('mirror', 'mirror');
    await sh('mirror', FIRST_CHANGES);
    const second = await settled('mirror', 'mirror', first.lastApplied!.batch);
    await sh('mirror', BURST_CHANGES);
    const third = await settled('mirror', 'mirror', second.lastApplied!.batch);
    expect(third.sourceHash).toBe(third.targetHash);

    const inWorkspace = await sh('mirror', listing('~/src', MIRROR_PRUNE));
    const inService = await sh('mirror', listing('/tmp/mirror', MIRROR_PRUNE), 'mirror');
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
