import { isAppError } from '../../protocol/errors.ts';
import {
  LineSplitter, MAX_SYNC_LINE_BYTES, syncSourceStatusSchema, syncTargetStatusSchema,
  type SyncSourceStatus, type SyncStatus, type SyncTargetStatus,
} from '../../protocol/sync.ts';
import { MAIN_AGENT } from '../../protocol/agent.ts';
import type { AgentHub, AgentRef } from '../agents/hub-types.ts';
import { openSyncPipe, type SyncPipe } from './relay.ts';

/** One sync of a service, as the template declares it. */
export interface SyncSpec {
  service: string;
  from: string;
  to: string;
  exclude: string[];
  /** a command run in the service (sh -c) after each applied batch */
  afterSyncRun?: string;
}

export interface SyncRunnerDeps {
  agents: AgentHub;
  /** a sentence for the workspace's events (errors, watch fallback, resyncs) */
  event(kind: string, message: string, detail: Record<string, unknown>): void;
  now(): Date;
}

/** Consecutive full copies whose hashes still disagree before the sync stops with an error (something in the service writes into the folder). */
const MAX_RESYNCS_IN_A_ROW = 3;
/** Source hashes kept while their batch is on its way. */
const KEEP_BATCHES = 1000;

/**
 * One running sync: a `sync-source` channel on the workspace's agent piped into a `sync-target`
 * channel on the service's agent (backpressure end to end through the pipe and both channels'
 * credit), and the status both report. When the batch hashes disagree the source sends the whole
 * tree again; an error from either side stops this sync and is a workspace event.
 */
export class SyncRunner {
  readonly spec: SyncSpec;
  private readonly deps: SyncRunnerDeps;
  private readonly workspaceId: string;
  private pipe: SyncPipe | undefined;
  private stopped = false;
  private sourceHashes = new Map<number, string>();
  private resyncsInARow = 0;
  private lastSourceBatch = 0;
  private lastAppliedBatch = 0;
  /** the hashes of the last mismatch, for the event that says what was resent */
  private mismatch: string | undefined;
  /** what the last comparison of listings found, until the listing's own batch is applied */
  private listed: 'resending' | 'nothing' | undefined;
  /** the first paths the target reported differing in the current comparison */
  private differing: string[] | undefined;
  private afterSyncRunning = false;
  private afterSyncAgain = false;
  status: SyncStatus;

  constructor(workspaceId: string, spec: SyncSpec, deps: SyncRunnerDeps) {
    this.workspaceId = workspaceId;
    this.spec = spec;
    this.deps = deps;
    this.status = {
      service: spec.service, from: spec.from, to: spec.to, state: 'waiting', watchMode: null, watchMessage: null, pendingFiles: 0,
      lastApplied: null, lastError: null, sourceHash: null, targetHash: null, inSync: false, resyncs: 0, resentFiles: 0,
    };
  }

  get running(): boolean {
    return this.pipe !== undefined;
  }

  /** Opens both channels; resolves once they run. An agent that is not connected leaves the sync `waiting` (start again later). */
  async start(): Promise<void> {
    if (this.stopped || this.pipe) return;
    const serviceAgent: AgentRef = { workspaceId: this.workspaceId, agent: this.spec.service };
    const mainAgent: AgentRef = { workspaceId: this.workspaceId, agent: MAIN_AGENT };
    if (!this.deps.agents.isConnected(serviceAgent) || !this.deps.agents.isConnected(mainAgent)) {
      this.status = { ...this.status, state: 'waiting' };
      return;
    }
    this.status = { ...this.status, state: 'initialising', lastError: null, inSync: false };
    this.sourceHashes.clear();
    this.lastSourceBatch = 0;
    this.lastAppliedBatch = 0;
    this.listed = undefined;
    const sourceLines = new LineSplitter(MAX_SYNC_LINE_BYTES, (line) => this.onSourceLine(line));
    const targetLines = new LineSplitter(MAX_SYNC_LINE_BYTES, (line) => this.onTargetLine(line));
    let pipe: SyncPipe | undefined;
    let endedWhileOpening: 'source' | 'target' | undefined;
    const ended = (side: 'source' | 'target') => {
      if (!pipe) {
        endedWhileOpening = side;
        return;
      }
      if (this.pipe !== pipe) return;
      this.detach();
      // an error line came first when an agent stopped the sync; otherwise the link went away
      const who = side === 'source' ? 'workspace' : `${this.spec.service} service's`;
      if (this.status.state !== 'error' && !this.stopped) this.status = { ...this.status, state: 'waiting', lastError: `The ${who} agent went away; the sync resumes when it is back.` };
    };
    try {
      pipe = await openSyncPipe(this.deps.agents,
        { agent: mainAgent, spec: { kind: 'sync-source', root: this.spec.from, exclude: this.spec.exclude } },
        { agent: serviceAgent, spec: { kind: 'sync-target', root: this.spec.to, exclude: this.spec.exclude } },
        {
          sourceStatus: (bytes) => this.guard(() => sourceLines.push(bytes)),
          targetStatus: (bytes) => this.guard(() => targetLines.push(bytes)),
          ended,
        });
    } catch (error) {
      return this.fail(error);
    }
    this.pipe = pipe;
    // stopped, or a side failed or went away while the other was opening
    if (this.stopped || this.status.state === 'error') return this.detach();
    if (endedWhileOpening) ended(endedWhileOpening);
  }

  /** Ends both channels; the runner is not started again. */
  stop(): void {
    this.stopped = true;
    this.detach();
  }

  private detach(): void {
    const pipe = this.pipe;
    this.pipe = undefined;
    pipe?.close();
  }

  private guard(work: () => void): void {
    try {
      work();
    } catch (error) {
      this.fail(error);
    }
  }

  private onSourceLine(line: string): void {
    const parsed = syncSourceStatusSchema.safeParse(parseJson(line));
    if (!parsed.success) throw new Error('The workspace agent sent a malformed sync status line.');
    const status: SyncSourceStatus = parsed.data;
    switch (status.type) {
      case 'watching':
        this.status = { ...this.status, watchMode: status.mode, watchMessage: status.message ?? null };
        if (status.mode === 'scan') this.deps.event('sync.watch', status.message ?? 'The workspace folder is scanned instead of watched.', { service: this.spec.service });
        return;
      case 'pending':
        this.status = { ...this.status, pendingFiles: status.files, state: this.stateNow(status.files) };
        return;
      case 'batch':
        this.lastSourceBatch = status.batch;
        this.sourceHashes.set(status.batch, status.hash);
        if (this.sourceHashes.size > KEEP_BATCHES) this.sourceHashes.delete(this.sourceHashes.keys().next().value!);
        this.status = { ...this.status, sourceHash: status.hash, state: this.stateNow(this.status.pendingFiles) };
        return;
      case 'error':
        return this.fail(new Error(status.message));
    }
  }

  private onTargetLine(line: string): void {
    const parsed = syncTargetStatusSchema.safeParse(parseJson(line));
    if (!parsed.success) throw new Error(`The ${this.spec.service} service's agent sent a malformed sync status line.`);
    const status: SyncTargetStatus = parsed.data;
    if (status.type === 'error') return this.fail(new Error(status.message));
    if (status.type === 'differs') {
      this.differing ??= status.paths.slice(0, 3);
      this.pipe?.command(JSON.stringify({ type: 'resend', paths: status.paths }));
      return;
    }
    if (status.type === 'differs-end') return this.compared(status.files, status.removed);
    this.lastAppliedBatch = status.batch;
    const sourceHash = this.sourceHashes.get(status.batch);
    this.sourceHashes.delete(status.batch);
    const inSync = sourceHash === status.hash;
    this.status = {
      ...this.status,
      targetHash: status.hash,
      sourceHash: sourceHash ?? this.status.sourceHash,
      inSync,
      lastApplied: { at: this.deps.now().toISOString(), batch: status.batch, files: status.files, latencyMs: Math.max(0, status.appliedAt - status.detectedAt) },
    };
    this.status.state = this.stateNow(this.status.pendingFiles);
    const listed = this.listed;
    this.listed = undefined;
    // the listing's own batch: what differed is on its way in the next one
    if (!inSync && listed === 'resending') return;
    if (!inSync && listed === 'nothing') return this.resync(sourceHash, status.hash, true);
    if (!inSync) return this.resync(sourceHash, status.hash);
    this.resyncsInARow = 0;
    this.runAfterSync();
  }

  private stateNow(pending: number): SyncStatus['state'] {
    if (this.status.state === 'error') return 'error';
    if (this.lastAppliedBatch === 0) return 'initialising';
    return pending > 0 || this.lastSourceBatch > this.lastAppliedBatch ? 'applying' : 'watching';
  }

  /** The hashes disagreed: the source lists what it sent, the target answers with what differs (`compared`). */
  private resync(sourceHash: string | undefined, targetHash: string, full = false): void {
    this.resyncsInARow++;
    this.status = { ...this.status, resyncs: this.status.resyncs + 1 };
    if (this.resyncsInARow > MAX_RESYNCS_IN_A_ROW) {
      return this.fail(new Error(`${this.spec.to} in the ${this.spec.service} service keeps differing from ${this.spec.from} after ${MAX_RESYNCS_IN_A_ROW} attempts to send what differed; something in the service writes into the synced folder. Exclude what it writes, then run \`den sync restart\`.`));
    }
    this.mismatch = `hash ${targetHash.slice(0, 12)} instead of ${(sourceHash ?? 'unknown').slice(0, 12)}`;
    this.differing = undefined;
    if (full) this.deps.event('sync.resync', `The ${this.spec.service} service's copy of ${this.spec.from} still differed from the workspace (${this.mismatch}) though no file differed when compared; den sends the whole folder again.`, { service: this.spec.service });
    this.pipe?.command(JSON.stringify(full ? { type: 'resync', full } : { type: 'resync' }));
  }

  /** The target compared the source's listing with its folder; the differing files are on their way again (the `differs` lines). */
  private compared(files: number, removed: number): void {
    const what = `The ${this.spec.service} service's copy of ${this.spec.from} differed from the workspace (${this.mismatch ?? 'the hashes disagreed'})`;
    const detail = { service: this.spec.service, files, removed };
    // the listing's batch follows: with nothing to resend its hash must agree, or the whole folder goes again
    this.listed = files > 0 ? 'resending' : 'nothing';
    this.status = { ...this.status, resentFiles: this.status.resentFiles + files };
    const examples = `${(this.differing ?? []).join(', ')}${files > 3 ? ', ...' : ''}`;
    const resent = files === 0 ? 'nothing needed sending again' : `den sends ${files === 1 ? 'that file' : `those ${files} files`} again (${examples})`;
    this.deps.event('sync.resync', `${what}: ${files} file${files === 1 ? '' : 's'} differed and ${removed} extra path${removed === 1 ? ' was' : 's were'} removed; ${resent}.`, detail);
  }

  private runAfterSync(): void {
    const run = this.spec.afterSyncRun;
    if (!run) return;
    if (this.afterSyncRunning) {
      this.afterSyncAgain = true;
      return;
    }
    this.afterSyncRunning = true;
    void (async () => {
      try {
        const session = await this.deps.agents.exec({ workspaceId: this.workspaceId, agent: this.spec.service }, { command: ['sh', '-c', run] });
        session.stdio.resume();
        session.stderr.resume();
        const code = await session.exit;
        if (code !== 0) this.deps.event('sync.after-sync', `The afterSync command of the ${this.spec.service} service exited with status ${code}; check it with \`den exec --service ${this.spec.service}\`.`, { service: this.spec.service, exitCode: code });
      } catch (error) {
        this.deps.event('sync.after-sync', `The afterSync command of the ${this.spec.service} service could not run: ${(error as Error).message}`, { service: this.spec.service });
      } finally {
        this.afterSyncRunning = false;
        if (this.afterSyncAgain && !this.stopped) {
          this.afterSyncAgain = false;
          this.runAfterSync();
        }
      }
    })();
  }

  private fail(error: unknown): void {
    const message = isAppError(error) || error instanceof Error ? error.message : String(error);
    const agentMissing = isAppError(error) && error.code === 'AGENT_NOT_CONNECTED';
    this.detach();
    if (agentMissing) {
      this.status = { ...this.status, state: 'waiting' };
      return;
    }
    if (this.status.state === 'error' && this.status.lastError === message) return;
    this.status = { ...this.status, state: 'error', lastError: message, inSync: false };
    this.deps.event('sync.error', `Sync of ${this.spec.from} into the ${this.spec.service} service stopped: ${message}`, { service: this.spec.service });
  }
}

function parseJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}
