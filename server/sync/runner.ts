import { randomUUID } from 'node:crypto';
import { isAppError } from '../../protocol/errors.ts';
import {
  syncSourceStatusSchema, syncTargetStatusSchema,
  type SyncSourceStatus, type SyncStatus, type SyncTargetStatus,
} from '../../protocol/sync.ts';
import { MAIN_AGENT } from '../../protocol/agent.ts';
import type { AgentHub, AgentRef } from '../agents/hub-types.ts';
import { AfterSync, type AfterSyncAction } from './after-sync.ts';
import { endedOnceOpened, openSyncPipe, parseJson, statusLines, type SyncPipe } from './relay.ts';
import { ReverseSync } from './reverse.ts';

/** One sync of a service, as the template declares it. */
export interface SyncSpec {
  service: string;
  from: string;
  to: string;
  exclude: string[];
  /** two-way: changes in the service come back into the workspace (ADR 0027); one-way when absent */
  mode?: 'one-way' | 'two-way';
  /** what the service does after each applied batch: a command (sh -c), or restart its process */
  afterSync?: AfterSyncAction;
}

export interface SyncRunnerDeps {
  agents: AgentHub;
  /** a sentence for the workspace's events (errors, watch fallback, resyncs) */
  event(kind: string, message: string, detail: Record<string, unknown>): void;
  now(): Date;
}

/** Consecutive resyncs (comparisons of listings, or full copies) whose hashes still disagree before the sync stops with an error (something in the service writes into the folder). */
const MAX_RESYNCS_IN_A_ROW = 3;
/** Source hashes kept while their batch is on its way. */
const KEEP_BATCHES = 1000;
/**
 * Two-way: hashes that disagree are expected for a moment (a batch lands while the other side has
 * a change on its way); only when no batch in either direction agrees for this long are both
 * sides' listings compared and what differs sent again (the whole folder when nothing does).
 */
const TWO_WAY_SETTLE_MS = 3_000;

/**
 * One running sync: a `sync-source` channel on the workspace's agent relayed frame by frame into
 * a `sync-target` channel on the service's agent (relay.ts: backpressure end to end through both
 * channels' credit), and the status both report; two-way adds the way back (reverse.ts, through
 * the same relay). When the batch hashes disagree the source sends a listing and only the paths
 * that differ go again (the whole tree when none does); an error from either side stops this
 * sync and is a workspace event.
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
  private readonly afterSync: AfterSync | undefined;
  private reverse: ReverseSync | undefined;
  private settleTimer: NodeJS.Timeout | undefined;
  /** the hashes of the last mismatch, for the event that says what was resent */
  private mismatch: string | undefined;
  /** what the last comparison of listings found, until the listing's own batch is applied */
  private listed: 'resending' | 'nothing' | undefined;
  /** the first paths the target reported differing in the current comparison */
  private differing: string[] | undefined;
  status: SyncStatus;

  constructor(workspaceId: string, spec: SyncSpec, deps: SyncRunnerDeps) {
    this.workspaceId = workspaceId;
    this.spec = spec;
    this.deps = deps;
    this.status = {
      service: spec.service, from: spec.from, to: spec.to, state: 'waiting', watchMode: null, watchMessage: null, pendingFiles: 0,
      lastApplied: null, lastError: null, sourceHash: null, targetHash: null, inSync: false, resyncs: 0, resentFiles: 0,
      mode: spec.mode ?? 'one-way', lastReturned: null, conflicts: 0, lastConflict: null, lastRestart: null,
    };
    this.afterSync = spec.afterSync && new AfterSync({
      workspaceId, service: spec.service, action: spec.afterSync, agents: deps.agents, event: deps.event,
      restarted: (pid) => {
        this.status = { ...this.status, lastRestart: { at: this.deps.now().toISOString(), pid } };
      },
      stopped: () => this.stopped,
    });
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
    // two-way: the source and the target on each agent find each other by this key
    const pair = this.spec.mode === 'two-way' ? randomUUID() : undefined;
    const fail = (error: unknown) => this.fail(error);
    const sourceStatus = statusLines((line) => this.onSourceLine(line), fail);
    const targetStatus = statusLines((line) => this.onTargetLine(line), fail);
    let pipe: SyncPipe;
    const end = endedOnceOpened((ended, side) => {
      if (this.pipe !== ended) return;
      this.detach();
      // an error line came first when an agent stopped the sync; otherwise the link went away
      const who = side === 'source' ? 'workspace' : `${this.spec.service} service's`;
      if (this.status.state !== 'error' && !this.stopped) this.status = { ...this.status, state: 'waiting', lastError: `The ${who} agent went away; the sync resumes when it is back.` };
    });
    try {
      pipe = await openSyncPipe(this.deps.agents,
        { agent: mainAgent, spec: { kind: 'sync-source', root: this.spec.from, exclude: this.spec.exclude, ...(pair ? { twoWay: { pair, initial: 'full' as const } } : {}) } },
        { agent: serviceAgent, spec: { kind: 'sync-target', root: this.spec.to, exclude: this.spec.exclude, ...(pair ? { twoWay: { pair, wins: 'incoming' as const } } : {}) } },
        { sourceStatus, targetStatus, ended: end.ended });
    } catch (error) {
      return this.fail(error);
    }
    this.pipe = pipe;
    // stopped, or a side failed or went away while the other was opening
    if (this.stopped || this.status.state === 'error') return this.detach();
    if (pair) this.reverse = this.reverseSync(pair);
    end.opened(pipe);
  }

  /** Ends both channels; the runner is not started again. */
  stop(): void {
    this.stopped = true;
    this.detach();
  }

  private detach(): void {
    const pipe = this.pipe;
    this.pipe = undefined;
    this.reverse?.stop();
    this.reverse = undefined;
    clearTimeout(this.settleTimer);
    this.settleTimer = undefined;
    pipe?.close();
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
    if (status.type === 'conflict') return this.recordConflict(status);
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
    if (this.reverse) {
      // the service's changes come back once the first copy made both folders the same
      if (inSync && !this.reverse.running) void this.reverse.start().catch((error: unknown) => this.fail(error));
      // a comparison of listings found nothing to resend while the hashes still disagree: the whole folder goes again
      if (!inSync && listed === 'nothing') return this.resync(sourceHash, status.hash, true);
      this.settle(inSync, sourceHash, status.hash);
      if (inSync) this.runAfterSync(status.files);
      return;
    }
    // the listing's own batch: what differed is on its way in the next one
    if (!inSync && listed === 'resending') return;
    if (!inSync && listed === 'nothing') return this.resync(sourceHash, status.hash, true);
    if (!inSync) return this.resync(sourceHash, status.hash);
    this.resyncsInARow = 0;
    this.runAfterSync(status.files);
  }

  /** Two-way: a batch either way whose hashes agree settles the sync; disagreement that outlasts TWO_WAY_SETTLE_MS resyncs (a comparison of listings). */
  private settle(inSync: boolean, workspaceHash: string | undefined, serviceHash: string): void {
    if (inSync) {
      clearTimeout(this.settleTimer);
      this.settleTimer = undefined;
      this.resyncsInARow = 0;
      return;
    }
    if (this.settleTimer) return;
    this.settleTimer = setTimeout(() => {
      this.settleTimer = undefined;
      if (this.pipe) this.resync(workspaceHash, serviceHash);
    }, TWO_WAY_SETTLE_MS);
  }

  /** The service-to-workspace half of a two-way sync; its batches and conflicts land in this status. */
  private reverseSync(pair: string): ReverseSync {
    const { service, from, to, exclude } = this.spec;
    return new ReverseSync({
      workspaceId: this.workspaceId, service, from, to, exclude, pair, agents: this.deps.agents,
      applied: (result) => {
        const inSync = result.serviceHash === result.workspaceHash;
        this.status = {
          ...this.status,
          sourceHash: result.workspaceHash, targetHash: result.serviceHash ?? this.status.targetHash, inSync,
          lastReturned: { at: this.deps.now().toISOString(), batch: result.batch, files: result.files, latencyMs: result.latencyMs },
        };
        this.settle(inSync, result.workspaceHash, result.serviceHash ?? 'unknown');
      },
      conflict: (status) => this.recordConflict(status),
      fail: (error) => this.fail(error),
      ended: (side) => {
        this.detach();
        if (this.status.state !== 'error' && !this.stopped) this.status = { ...this.status, state: 'waiting', lastError: `The ${side} agent went away; the sync resumes when it is back.` };
      },
    });
  }

  /** A path changed on both sides (agent/sync/conflict.ts): counted, the last one kept, and a workspace event. */
  private recordConflict(status: Extract<SyncTargetStatus, { type: 'conflict' }>): void {
    const { service, from } = this.spec;
    const path = `${from.replace(/\/$/, '')}/${status.path}`;
    const message = status.copy !== null
      ? `${path} changed in the workspace and in the ${service} service at once; the workspace's version is kept, the service's is beside it at ${from.replace(/\/$/, '')}/${status.copy}.`
      : status.kept === 'local'
        ? `${path} changed in the workspace and in the ${service} service at once; the workspace's version is kept and the service's change (not a file, so not kept) is undone there.`
        : `${path} changed in the workspace and in the ${service} service at once; the workspace's version replaced the service's (not a file, so not kept).`;
    this.status = { ...this.status, conflicts: this.status.conflicts + 1, lastConflict: { at: this.deps.now().toISOString(), path, copy: status.copy, message } };
    this.deps.event('sync.conflict', message, { service, path, copy: status.copy });
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

  /** After a batch from the workspace landed; a restart only when it changed something (a two-way sync sends empty batches back and forth). */
  private runAfterSync(files: number): void {
    if (files > 0 || (this.spec.afterSync !== 'restart' && this.spec.mode !== 'two-way')) this.afterSync?.trigger();
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

