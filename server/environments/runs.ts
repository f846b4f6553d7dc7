import { randomUUID } from 'node:crypto';
import type { Kysely, Selectable } from 'kysely';
import { AppError } from '../../protocol/errors.ts';
import type { EnvironmentRunDto } from '../../protocol/environments.ts';
import { parseDuration, type TaskSpec, type TestSpec } from '../../protocol/template.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import type { OneOffResult, RuntimeDriver } from '../runtimes/driver.ts';
import type { Database, EnvironmentRunsTable } from '../store/schema.ts';
import { iso, type Clock } from '../store/time.ts';
import { getWorkspaceIdentity } from '../workspaces/access.ts';
import { runAgentCommand } from './agent-command.ts';

/**
 * Runs of environment tasks and tests: each is a row (version, outcome, the tail of its output)
 * written as it starts and finishes. The output goes to the caller as lines while it runs and to
 * the store bounded: a run keeps its last RUN_LOG_CAP_BYTES, and a workspace its newest
 * KEEP_RUNS runs, so no command's output can fill the database (worst case ~6 MiB per workspace).
 */
export const RUN_LOG_CAP_BYTES = 64 * 1024;
export const KEEP_RUNS = 100;
/** a longer line is passed on in pieces of this size */
const MAX_LINE_BYTES = 16 * 1024;
/** the schema's default, for a spec stored before timeouts existed */
const DEFAULT_TIMEOUT_MS = 10 * 60_000;

export type RunRow = Selectable<EnvironmentRunsTable>;
export type EntryKind = 'task' | 'test';

export interface RunDeps {
  db: Kysely<Database>;
  clock: Clock;
  agents: Pick<AgentHub, 'exec'>;
  /** runs the one-off entries (`oneOff: true`); absent in callers that never meet one */
  driver?: Pick<RuntimeDriver, 'name' | 'runOneOff'>;
}

export interface RunEntry {
  kind: EntryKind;
  name: string;
  spec: TaskSpec | TestSpec;
  version: string;
}

export interface RunOptions {
  trigger: 'build' | 'user';
  userId?: string;
  buildId?: string;
  signal?: AbortSignal;
  /** each line of output as it arrives */
  onLine?(stream: 'stdout' | 'stderr', line: string): void;
}

/**
 * Runs a task or test (`sh -c RUN`, in the service's environment and working directory) in its
 * service's agent, or in a one-off container from the service's image (`oneOff: true`), and
 * records the run; resolves with the finished row whatever the command's status: passed,
 * failed, or cancelled when `signal` aborted it (the client went away). Throws (after recording
 * the failure) only when it cannot start: the agent or the service cannot be reached.
 */
export async function runEntry(deps: RunDeps, workspaceId: string, entry: RunEntry, options: RunOptions): Promise<RunRow> {
  const id = randomUUID();
  await deps.db.insertInto('environment_runs').values({
    id, workspace_id: workspaceId, kind: entry.kind, name: entry.name, version: entry.version, state: 'running', exit_code: null,
    trigger: options.trigger, user_id: options.userId ?? null, build_id: options.buildId ?? null, started_at: iso(deps.clock.now()), finished_at: null,
  }).execute();
  await pruneRuns(deps.db, workspaceId);
  const log = new LogTail(RUN_LOG_CAP_BYTES);
  const lines = { stdout: new LineSplitter(), stderr: new LineSplitter() };
  const emit = (stream: 'stdout' | 'stderr', text: string) => {
    for (const line of lines[stream].push(text)) options.onLine?.(stream, line);
  };
  let exitCode: number | undefined;
  let note: string | undefined;
  let cancelled = false;
  try {
    const result = await execute(deps, workspaceId, entry, options.signal, (stream, text) => {
      log.append(text);
      emit(stream, text);
    });
    exitCode = result.exitCode;
    if (result.timedOut) note = `den ended the ${entry.kind} after its timeout of ${entry.spec.timeout ?? '10m'}${entry.spec.oneOff ? ' and removed its one-off container' : ''}.`;
    else if (exitCode === undefined && options.signal?.aborted) {
      cancelled = true;
      note = `den ended the ${entry.kind}: the request that ran it went away${entry.spec.oneOff ? ', and den removed its one-off container' : ''}.`;
    } else if (exitCode === undefined) {
      note = `The ${entry.kind} ended without an exit status: its ${entry.spec.oneOff ? 'one-off container was removed' : 'command was killed'} before it finished.`;
    }
  } catch (error) {
    note = `The ${entry.kind} could not start: ${error instanceof Error ? error.message : String(error)}`;
    await finish(deps, id, undefined, log, note, false);
    throw error;
  }
  for (const stream of ['stdout', 'stderr'] as const) for (const line of lines[stream].end()) options.onLine?.(stream, line);
  if (note) {
    log.append(`\n${note}\n`);
    options.onLine?.('stderr', note);
  }
  return finish(deps, id, exitCode, log, note, cancelled);
}

/** The command of an entry, through its service's agent or in a one-off container from the service's image. */
async function execute(
  deps: RunDeps, workspaceId: string, entry: RunEntry, signal: AbortSignal | undefined, onOutput: (stream: 'stdout' | 'stderr', text: string) => void,
): Promise<OneOffResult> {
  const command = ['sh', '-c', entry.spec.run];
  const timeoutMs = (entry.spec.timeout ? parseDuration(entry.spec.timeout) : null) ?? DEFAULT_TIMEOUT_MS;
  if (!entry.spec.oneOff) {
    return runAgentCommand(deps.agents, { workspaceId, agent: entry.spec.service }, command, {
      timeoutMs, signal, onOutput: (stream, chunk) => onOutput(stream, chunk.toString('utf8')),
    });
  }
  if (!deps.driver?.runOneOff) {
    // the template was checked against the runtime's capabilities when pushed and at each start; this is a runtime changed since
    throw new AppError('RUNTIME_CAPABILITY_MISSING',
      `The ${entry.kind} '${entry.name}' runs in a one-off container (oneOff: true), which the ${deps.driver?.name ?? 'current'} runtime cannot start. Remove \`oneOff\` to run it through service ${entry.spec.service}'s agent, or use a runtime that runs containers (docker, kubernetes).`);
  }
  const workspace = await getWorkspaceIdentity(deps.db, workspaceId);
  if (!workspace) throw new AppError('WORKSPACE_NOT_FOUND', 'The workspace of this run no longer exists.');
  return deps.driver.runOneOff(workspace, { service: entry.spec.service, command, timeoutMs, signal, onOutput });
}

/** The newest finished run of an entry at a version that passed, if any (a test's cached result, a task that need not run again). */
export async function lastPassedRun(db: Kysely<Database>, workspaceId: string, kind: EntryKind, name: string, version: string): Promise<RunRow | undefined> {
  return db.selectFrom('environment_runs').selectAll()
    .where('workspace_id', '=', workspaceId).where('kind', '=', kind).where('name', '=', name)
    .where('version', '=', version).where('state', '=', 'passed')
    .orderBy('started_at', 'desc').limit(1).executeTakeFirst();
}

/** A run without its log (lists read many runs; the log is read one run at a time). */
export type RunSummary = Omit<RunRow, 'log'>;
const SUMMARY_COLUMNS = [
  'id', 'workspace_id', 'kind', 'name', 'version', 'state', 'exit_code', 'trigger', 'user_id', 'build_id', 'log_dropped_bytes', 'started_at', 'finished_at',
] as const;

/** A workspace's runs, newest first. */
export async function listRuns(db: Kysely<Database>, workspaceId: string, filter: { kind?: EntryKind; name?: string; limit: number }): Promise<RunSummary[]> {
  let query = db.selectFrom('environment_runs').select(SUMMARY_COLUMNS).where('workspace_id', '=', workspaceId);
  if (filter.kind) query = query.where('kind', '=', filter.kind);
  if (filter.name) query = query.where('name', '=', filter.name);
  return query.orderBy('started_at', 'desc').orderBy('id', 'desc').limit(filter.limit).execute();
}

/** The latest run of each task and test, by `kind:name`. */
export async function latestRuns(db: Kysely<Database>, workspaceId: string): Promise<Map<string, RunSummary>> {
  const rows = await db.selectFrom('environment_runs').select(SUMMARY_COLUMNS).where('workspace_id', '=', workspaceId).orderBy('started_at', 'asc').execute();
  return new Map(rows.map((row) => [`${row.kind}:${row.name}`, row]));
}

export async function getRun(db: Kysely<Database>, workspaceId: string, id: string): Promise<RunRow> {
  const row = await db.selectFrom('environment_runs').selectAll().where('workspace_id', '=', workspaceId).where('id', '=', id).executeTakeFirst();
  if (!row) throw new AppError('ENVIRONMENT_RUN_NOT_FOUND', `This workspace has no run '${id}'. Run \`den test WS --history\` to see its runs.`);
  return row;
}

/** Row -> DTO; `by` is the username of who ran it (looked up by the caller). */
export function runDto(row: RunSummary, by: string | null): EnvironmentRunDto {
  return {
    id: row.id, kind: row.kind, name: row.name, version: row.version, state: row.state, exitCode: row.exit_code,
    trigger: row.trigger, by, startedAt: row.started_at, finishedAt: row.finished_at, logDroppedBytes: row.log_dropped_bytes,
  };
}

async function finish(deps: RunDeps, id: string, exitCode: number | undefined, log: LogTail, note: string | undefined, cancelled: boolean): Promise<RunRow> {
  const passed = exitCode === 0 && note === undefined;
  await deps.db.updateTable('environment_runs').set({
    state: cancelled ? 'cancelled' : passed ? 'passed' : 'failed', exit_code: exitCode ?? null, log: log.text(), log_dropped_bytes: log.dropped, finished_at: iso(deps.clock.now()),
  }).where('id', '=', id).execute();
  return (await deps.db.selectFrom('environment_runs').selectAll().where('id', '=', id).executeTakeFirstOrThrow());
}

/** Keeps the workspace's newest KEEP_RUNS runs. */
async function pruneRuns(db: Kysely<Database>, workspaceId: string): Promise<void> {
  const oldestKept = await db.selectFrom('environment_runs').select('started_at').where('workspace_id', '=', workspaceId)
    .orderBy('started_at', 'desc').limit(1).offset(KEEP_RUNS - 1).executeTakeFirst();
  if (!oldestKept) return;
  await db.deleteFrom('environment_runs').where('workspace_id', '=', workspaceId).where('started_at', '<', oldestKept.started_at).execute();
}

/** The last `cap` bytes of a text, and how many bytes came before them. */
export class LogTail {
  #chunks: string[] = [];
  #bytes = 0;
  dropped = 0;
  readonly #cap: number;

  constructor(cap: number) {
    this.#cap = cap;
  }

  append(text: string): void {
    this.#chunks.push(text);
    this.#bytes += Buffer.byteLength(text);
    while (this.#bytes > this.#cap && this.#chunks.length > 1) {
      const first = this.#chunks.shift()!;
      const size = Buffer.byteLength(first);
      this.#bytes -= size;
      this.dropped += size;
    }
    if (this.#bytes > this.#cap) {
      // one chunk larger than the cap: keep its end
      const only = Buffer.from(this.#chunks[0]);
      const kept = only.subarray(only.length - this.#cap).toString('utf8');
      this.dropped += only.length - Buffer.byteLength(kept);
      this.#chunks = [kept];
      this.#bytes = Buffer.byteLength(kept);
    }
  }

  text(): string {
    return this.#chunks.join('');
  }
}

/** Cuts a stream of text into lines; a line longer than MAX_LINE_BYTES is passed on in pieces. */
class LineSplitter {
  #pending = '';

  push(text: string): string[] {
    const parts = (this.#pending + text).split('\n');
    this.#pending = parts.pop() ?? '';
    const out = parts.map((line) => line.replace(/\r$/, ''));
    while (this.#pending.length > MAX_LINE_BYTES) {
      out.push(this.#pending.slice(0, MAX_LINE_BYTES));
      this.#pending = this.#pending.slice(MAX_LINE_BYTES);
    }
    return out;
  }

  end(): string[] {
    const rest = this.#pending;
    this.#pending = '';
    return rest ? [rest] : [];
  }
}
