import { Worker } from 'node:worker_threads';
import { AppError, type ErrorCode, type ValidationIssue } from '../../protocol/errors.ts';
import type { TemplateSpec } from '../../protocol/template.ts';
import { TEMPLATE_FILE } from '../../protocol/templates-api.ts';
import { parseScannedTemplateYaml, scanTemplateYaml, type ParseTemplateOptions } from './parse.ts';

/**
 * Reads template.yaml without holding the event loop that answers every other request. The
 * bounds of yaml-bounds.ts keep a document to 5,000 nodes, but that still costs 30-60 ms here
 * (about 10 µs per node for the parser and zod), and three pushes at once held /healthz for
 * 150-400 ms (bench/templates.ts). So the scan runs inline (it stops early on a hostile
 * document), a document of real-template size (templates/node-api: 311 nodes) parses inline in a
 * few ms, and a larger one goes to a worker thread.
 *
 * One worker, one document at a time: memory stays at one parse (the worker's heap is capped),
 * and a push waits its turn. The worker costs about 70 MB while it lives (its own V8 heap, the
 * TypeScript loader, yaml and zod), so it starts only for a large document and stops after a
 * minute without one. Module-level because it is a cache of a thread, like a pool, not state a
 * test or a second server instance could observe.
 */

/** Up to this many nodes (as yaml-bounds.ts counts them) a document parses inline: about 10 ms. */
export const INLINE_PARSE_NODES = 1_000;
/** A document the bounds let through parses in well under a second; this is the backstop. */
export const PARSE_TIMEOUT_MS = 10_000;
/** Pushes waiting for the worker beyond this are refused at once (RATE_LIMITED). */
export const MAX_WAITING_PARSES = 8;
const IDLE_STOP_MS = 60_000;
/** A document within the bounds needs a few MB (5,000 nodes at about 1 KB); the cap stops anything else early. */
const RESOURCE_LIMITS = { maxOldGenerationSizeMb: 128, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 };

interface Job {
  text: string;
  options: ParseTemplateOptions;
  resolve: (spec: TemplateSpec) => void;
  reject: (error: Error) => void;
}

type Reply =
  | { spec: TemplateSpec }
  | { refused: { code: ErrorCode; message: string; detail?: string; validations?: ValidationIssue[] } }
  | { failed: string };

const waiting: Job[] = [];
let running: { job: Job; timer: NodeJS.Timeout } | undefined;
let worker: Worker | undefined;
let idleTimer: NodeJS.Timeout | undefined;

/** parseTemplateYaml, inline or on the worker thread by size: the same spec, or the same AppError. */
export async function readTemplateYaml(text: string, options: ParseTemplateOptions = {}): Promise<TemplateSpec> {
  if (scanTemplateYaml(text, options) <= INLINE_PARSE_NODES) return parseScannedTemplateYaml(text, options);
  return parseOnWorker(text, options);
}

function parseOnWorker(text: string, options: ParseTemplateOptions): Promise<TemplateSpec> {
  if (waiting.length >= MAX_WAITING_PARSES) {
    return Promise.reject(new AppError('RATE_LIMITED', 'The server is reading too many templates at once; push again in a moment.'));
  }
  return new Promise((resolve, reject) => {
    waiting.push({ text, options, resolve, reject });
    next();
  });
}

function next(): void {
  if (running) return;
  const job = waiting.shift();
  clearTimeout(idleTimer);
  if (!job) {
    idleTimer = setTimeout(stopWorker, IDLE_STOP_MS).unref();
    return;
  }
  const thread = worker ?? startWorker();
  thread.ref();
  const timer = setTimeout(() => {
    stopWorker();
    finish(job, new AppError('TEMPLATE_YAML_INVALID', `${fileName(job)} took longer than ${PARSE_TIMEOUT_MS / 1000} s to read. Simplify the document and push again.`));
  }, PARSE_TIMEOUT_MS);
  running = { job, timer };
  thread.postMessage({ text: job.text, options: job.options });
}

function startWorker(): Worker {
  const thread = new Worker(new URL('./parse-worker.ts', import.meta.url), { resourceLimits: RESOURCE_LIMITS });
  thread.on('message', (reply: Reply) => {
    if (!running || thread !== worker) return;
    const { job } = running;
    if ('spec' in reply) finish(job, undefined, reply.spec);
    else if ('refused' in reply) finish(job, new AppError(reply.refused.code, reply.refused.message, { detail: reply.refused.detail, validations: reply.refused.validations }));
    else finish(job, new Error(`Reading the template failed: ${reply.failed}`));
  });
  // Out of memory (the heap cap) or a crash: the push fails, the next one gets a new thread.
  const lost = (error?: Error) => {
    if (thread !== worker) return;
    worker = undefined;
    if (!running) return;
    const job = running.job;
    const outOfMemory = (error as { code?: string } | undefined)?.code === 'ERR_WORKER_OUT_OF_MEMORY';
    finish(job, outOfMemory
      ? new AppError('TEMPLATE_YAML_INVALID', `${fileName(job)} needs more memory to read than the server allows. Simplify the document and push again.`)
      : new Error('The template reader thread stopped unexpectedly.', { cause: error }));
  };
  thread.on('error', lost);
  thread.on('exit', () => lost());
  worker = thread;
  return thread;
}

function finish(job: Job, error: Error | undefined, spec?: TemplateSpec): void {
  if (running?.job !== job) return;
  clearTimeout(running.timer);
  running = undefined;
  worker?.unref();
  if (error) job.reject(error);
  else job.resolve(spec!);
  next();
}

function stopWorker(): void {
  const thread = worker;
  worker = undefined;
  void thread?.terminate();
}

function fileName(job: Job): string {
  return job.options.fileName ?? TEMPLATE_FILE;
}
