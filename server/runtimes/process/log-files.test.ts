import { spawn } from 'node:child_process';
import { appendFileSync, closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { WorkspacePlan } from '../driver.ts';
import { createProcessDriver } from './driver.ts';
import { capLogFile, LOG_CAP_INTERVAL_MS, type LogFileLimits } from './log-files.ts';
import { readNewLines } from './readiness.ts';

/** A writer process prints a few thousand lines well within this. */
const WRITER_TIMEOUT_MS = 20_000;
/** a few checks of the running driver */
const DRIVER_CAP_TIMEOUT_MS = 10 * LOG_CAP_INTERVAL_MS;
const limits: LogFileLimits = { maxBytes: 200_000, headBytes: 20_000, tailBytes: 50_000 };
const line = (i: number) => `line ${String(i).padStart(6, '0')} ${'x'.repeat(80)}\n`;
const lines = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => line(from + i)).join('');

describe('log file cap', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'den-log-files-'));
    file = join(dir, 'svc.log');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('leaves a file under the limit alone', () => {
    writeFileSync(file, lines(0, 100));
    expect(capLogFile(file, limits)).toBe(0);
    expect(readFileSync(file, 'utf8')).toBe(lines(0, 100));
  });

  it('keeps the head and the tail of a file over the limit, with a marker that counts what was cut', () => {
    writeFileSync(file, lines(0, 10_000));
    capLogFile(file, limits);
    const text = readFileSync(file, 'utf8').split('\n').slice(0, -1);
    const at = text.findIndex((l) => l.startsWith('[den] cut '));
    const kept = text.filter((_, i) => i !== at).map((l) => Number(l.slice(5, 11)));
    // whole lines on both sides, in order, the first and the last included
    expect(kept.slice(0, at)).toEqual(Array.from({ length: at }, (_, i) => i));
    expect(kept.slice(at)).toEqual(Array.from({ length: kept.length - at }, (_, i) => 10_000 - (kept.length - at) + i));
    const cut = 10_000 - kept.length;
    expect(text[at]).toMatch(new RegExp(`^\\[den\\] cut ${cut} lines \\(${cut * line(0).length} bytes\\) of this log here`));
    expect(statSync(file).size).toBeLessThanOrEqual(limits.headBytes + limits.tailBytes + 512);
  });

  it('adds up the counts when a file is cut again, keeping one marker', () => {
    writeFileSync(file, lines(0, 10_000));
    capLogFile(file, limits);
    appendFileSync(file, lines(10_000, 20_000));
    capLogFile(file, limits);
    const text = readFileSync(file, 'utf8').split('\n').slice(0, -1);
    const markers = text.filter((l) => l.startsWith('[den] cut '));
    expect(markers).toHaveLength(1);
    const kept = text.length - 1;
    expect(markers[0]).toMatch(new RegExp(`^\\[den\\] cut ${20_000 - kept} lines \\(${(20_000 - kept) * line(0).length} bytes\\)`));
    expect(text.at(-1)).toBe(line(19_999).trimEnd());
  });

  it('lets a follower that was at the old end go on with the lines written after the cut', () => {
    writeFileSync(file, lines(0, 10_000));
    const oldEnd = statSync(file).size;
    capLogFile(file, limits);
    const resumed = readNewLines(file, oldEnd);
    expect(resumed).toEqual({ lines: [], offset: statSync(file).size });
    appendFileSync(file, line(10_000));
    expect(readNewLines(file, resumed.offset).lines).toEqual([line(10_000).trimEnd()]);
  });

  it('keeps a file bounded while its writer appends through its own descriptor, and the writer\'s last line is kept', async () => {
    // As the process runtime does: the writer's stdout is a descriptor opened for appending.
    const fd = openSync(file, 'a');
    const writer = spawn(process.execPath, ['-e', `
      const line = (i) => 'line ' + String(i).padStart(6, '0') + ' ' + 'x'.repeat(80) + '\\n';
      let i = 0;
      const step = () => { let chunk = ''; for (let n = 0; n < 500; n++) chunk += line(i++); process.stdout.write(chunk);
        if (i < 50000) setImmediate(step); };
      step();`], { stdio: ['ignore', fd, 'ignore'] });
    closeSync(fd);
    const exited = new Promise<void>((resolve) => writer.once('exit', () => resolve()));
    let running = true;
    void exited.then(() => (running = false));
    const deadline = Date.now() + WRITER_TIMEOUT_MS;
    while (running && Date.now() < deadline) {
      capLogFile(file, limits);
      await new Promise((resolve) => setImmediate(resolve));
    }
    await exited;
    capLogFile(file, limits);
    const text = readFileSync(file, 'utf8').split('\n').slice(0, -1);
    expect(text[0]).toBe(line(0).trimEnd());
    expect(text.at(-1)).toBe(line(49_999).trimEnd());
    expect(text.filter((l) => l.startsWith('[den] cut '))).toHaveLength(1);
    expect(text.every((l) => /^line \d{6} x{80}$/.test(l) || l.startsWith('[den] cut '))).toBe(true);
    expect(statSync(file).size).toBeLessThanOrEqual(limits.maxBytes);
  });
});

describe('process driver log files', () => {
  let dataDir: string;
  const workspace = { id: 'ws-log-cap', name: 'flood', ownerId: 'u', ownerName: 'alice' };
  const context = { log: () => {}, signal: new AbortController().signal, secret: async () => 'unused' };
  beforeEach(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'den-log-cap-'));
  });
  afterEach(() => rmSync(dataDir, { recursive: true, force: true }));

  it('cuts the log file of a service that writes without end down to its head and tail while it runs', async () => {
    const driver = createProcessDriver({ dataDir, log: pino({ level: 'silent' }), requireSandbox: false, stopGraceMs: 1_000, logFileLimits: limits });
    const plan: WorkspacePlan = {
      workspace, image: '', resources: {}, home: {}, env: {}, agent: { name: 'main', url: 'http://127.0.0.1:9', revision: 'r1', delivery: { kind: 'path' } }, secrets: [{ name: 'agent-token', env: 'DEN_AGENT_TOKEN', agent: 'main' }],
      services: [{
        name: 'flood', env: {}, volumes: [], dependsOn: [], ports: [],
        command: ['node', '-e', "const l = 'y'.repeat(100) + '\\n'; setInterval(() => process.stdout.write(l.repeat(1000)), 5)"],
      }],
    };
    try {
      await driver.start(plan, context);
      const file = join(dataDir, 'workspaces', workspace.id, 'logs', 'flood.log');
      const deadline = Date.now() + DRIVER_CAP_TIMEOUT_MS;
      let cut = false;
      while (!cut && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, LOG_CAP_INTERVAL_MS / 4));
        cut = readFileSync(file, 'utf8').includes('[den] cut ');
      }
      expect(cut).toBe(true);
      // Reading the tail through the driver still works on the cut file.
      const tail: string[] = [];
      for await (const entry of await driver.serviceLogs(workspace, 'flood', { tail: 3, follow: false, signal: new AbortController().signal })) tail.push(entry.line);
      expect(tail).toHaveLength(3);
    } finally {
      await driver.delete(workspace, context);
      await driver.close();
    }
  });
});
