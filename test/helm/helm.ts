/**
 * Helpers for the tests of deploy/helm/den: where the helm binary built by test/cluster/helm.sh
 * is, and running it. Without it the tests skip with `helmSkipReason`; in CI they fail.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const CHART = join(ROOT, 'deploy', 'helm', 'den');

const fromVersions = (expression: string) => execFileSync('bash', ['-c', `source ${join(ROOT, 'test/cluster/versions.sh')}; echo "${expression}"`], { encoding: 'utf8' }).trim();

/** HELM, else the binary test/cluster/helm.sh builds ($DEN_K8S_CACHE/helm/<version>/bin/helm). */
export const helmPath = process.env.HELM || fromVersions('$DEN_K8S_CACHE/helm/$HELM_VERSION/bin/helm');
/** the kubectl test/cluster/build.sh builds with the cluster */
export const kubectlPath = fromVersions('$DEN_K8S_BIN/kubectl');

export const helmSkipReason = existsSync(helmPath)
  ? undefined
  : `helm is not built (${helmPath} is missing); run \`bash test/cluster/helm.sh\` (a few minutes, cached) or set HELM to a helm v4 binary.`;

/** True in CI when helm is missing: the chart's tests must then fail instead of skipping. */
export const helmMissingInCI = !!helmSkipReason && !!process.env.CI;

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs helm with `args`; resolves with its exit code and output (never rejects on a non-zero exit). */
export function helm(args: string[], options: { timeoutMs?: number } = {}): Promise<Run> {
  return run(helmPath, args, options);
}

/** Runs kubectl (KUBECONFIG from the environment) with `args` and optional standard input. */
export function kubectl(args: string[], options: { input?: string; timeoutMs?: number } = {}): Promise<Run> {
  return run(kubectlPath, args, options);
}

function run(command: string, args: string[], options: { input?: string; timeoutMs?: number }): Promise<Run> {
  return new Promise((resolvePromise, reject) => {
    const child = execFile(command, args, { timeout: options.timeoutMs ?? 120_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error && typeof error.code !== 'number') return reject(new Error(`${command} ${args.join(' ')}: ${error.message}\n${stderr}`));
      resolvePromise({ code: error ? (error.code as number) : 0, stdout, stderr });
    });
    child.stdin!.end(options.input ?? '');
  });
}

export interface RenderedObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

/** `helm template` of the chart with `--set` values, parsed into its objects; throws with helm's output when it fails. */
export async function render(set: Record<string, string | number | boolean> = {}, { release = 'den', namespace = 'den-system' } = {}): Promise<RenderedObject[]> {
  const result = await helm(['template', release, CHART, '--namespace', namespace, ...setArgs(set)]);
  if (result.code !== 0) throw new Error(`helm template failed (exit ${result.code}): ${result.stderr}`);
  return parseAllDocuments(result.stdout).map((doc) => doc.toJS() as RenderedObject).filter((object) => object !== null);
}

export function setArgs(set: Record<string, string | number | boolean>): string[] {
  return Object.entries(set).flatMap(([key, value]) => [typeof value === 'string' ? '--set-string' : '--set', `${key}=${value}`]);
}

export function find(objects: RenderedObject[], kind: string): RenderedObject[] {
  return objects.filter((object) => object.kind === kind);
}
