import { syncSourceStatusSchema, syncTargetStatusSchema, type SyncTargetStatus } from '../../protocol/sync.ts';
import { MAIN_AGENT } from '../../protocol/agent.ts';
import type { AgentHub, AgentRef } from '../agents/hub-types.ts';
import { endedOnceOpened, openSyncPipe, parseJson, statusLines, type SyncPipe } from './relay.ts';

/** Where a two-way sync's second direction runs, and what it tells its runner. */
export interface ReverseSyncOptions {
  workspaceId: string;
  service: string;
  from: string;
  to: string;
  exclude: string[];
  /** the key the two agents' source and target of this sync share (agent/sync/pair.ts) */
  pair: string;
  agents: AgentHub;
  /** a batch from the service was applied in the workspace: both hashes and its latency */
  applied(result: { batch: number; files: number; serviceHash: string | undefined; workspaceHash: string; latencyMs: number }): void;
  conflict(status: Extract<SyncTargetStatus, { type: 'conflict' }>): void;
  fail(error: unknown): void;
  /** a channel ended without an error line: the agent went away */
  ended(side: string): void;
}

/** Source hashes kept while their batch is on its way. */
const KEEP_BATCHES = 1000;

/**
 * The service-to-workspace half of a two-way sync (ADR 0027): a `sync-source` on the service's
 * agent that sends only changes (the full copy the other way made both folders the same), piped
 * into a `sync-target` on the workspace's agent, where the workspace's version wins a conflict.
 * Relayed frame by frame like the other direction (server/sync/relay.ts).
 */
export class ReverseSync {
  private readonly options: ReverseSyncOptions;
  private pipe: SyncPipe | undefined;
  private stopped = false;
  private opening = false;
  private readonly sourceHashes = new Map<number, string>();

  constructor(options: ReverseSyncOptions) {
    this.options = options;
  }

  /** opened, or on its way: started once per runner start */
  get running(): boolean {
    return this.opening;
  }

  async start(): Promise<void> {
    if (this.opening) return;
    this.opening = true;
    const { workspaceId, service, from, to, exclude, pair, agents } = this.options;
    const serviceAgent: AgentRef = { workspaceId, agent: service };
    const mainAgent: AgentRef = { workspaceId, agent: MAIN_AGENT };
    const fail = (error: unknown) => this.options.fail(error);
    const end = endedOnceOpened((pipe, side) => {
      if (this.pipe !== pipe || this.stopped) return;
      this.stop();
      this.options.ended(side === 'source' ? `${service} service's` : 'workspace');
    });
    const pipe = await openSyncPipe(agents,
      { agent: serviceAgent, spec: { kind: 'sync-source', root: to, exclude, twoWay: { pair, initial: 'known' } } },
      { agent: mainAgent, spec: { kind: 'sync-target', root: from, exclude, twoWay: { pair, wins: 'local' } } },
      { sourceStatus: statusLines((line) => this.onSourceLine(line), fail), targetStatus: statusLines((line) => this.onTargetLine(line), fail), ended: end.ended });
    if (this.stopped) return pipe.close();
    this.pipe = pipe;
    end.opened(pipe);
  }

  stop(): void {
    this.stopped = true;
    const pipe = this.pipe;
    this.pipe = undefined;
    pipe?.close();
  }

  private onSourceLine(line: string): void {
    const parsed = syncSourceStatusSchema.safeParse(parseJson(line));
    if (!parsed.success) throw new Error(`The ${this.options.service} service's agent sent a malformed sync status line.`);
    const status = parsed.data;
    if (status.type === 'error') return this.options.fail(new Error(status.message));
    if (status.type !== 'batch') return;
    this.sourceHashes.set(status.batch, status.hash);
    if (this.sourceHashes.size > KEEP_BATCHES) this.sourceHashes.delete(this.sourceHashes.keys().next().value!);
  }

  private onTargetLine(line: string): void {
    const parsed = syncTargetStatusSchema.safeParse(parseJson(line));
    if (!parsed.success) throw new Error('The workspace agent sent a malformed sync status line.');
    const status = parsed.data;
    if (status.type === 'error') return this.options.fail(new Error(status.message));
    if (status.type === 'conflict') return this.options.conflict(status);
    // the reverse direction is never asked for a listing (the runner settles both directions by a full copy's or listing's way forward)
    if (status.type !== 'applied') return;
    const serviceHash = this.sourceHashes.get(status.batch);
    this.sourceHashes.delete(status.batch);
    this.options.applied({ batch: status.batch, files: status.files, serviceHash, workspaceHash: status.hash, latencyMs: Math.max(0, status.appliedAt - status.detectedAt) });
  }
}
