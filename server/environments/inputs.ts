import { createHash } from 'node:crypto';
import { AppError } from '../../protocol/errors.ts';
import type { AgentHub } from '../agents/hub-types.ts';
import { runAgentCommand } from './agent-command.ts';
import type { InputHashes } from './versions.ts';

/** More listing than this (about 50,000 files) is refused rather than held in memory. */
const MAX_LISTING_BYTES = 8 * 1024 * 1024;
const HASH_TIMEOUT_MS = 60_000;

/**
 * Lists, for each path, the SHA-256 of every regular file under it (a file: itself), sorted by
 * path in the C locale, so the listing depends only on names and contents. `$HOME` is the
 * working directory: `~/app` arrives as `app`. A path that does not exist is listed as missing
 * (its version changes when it appears).
 */
const HASH_SCRIPT = `cd "$HOME" || exit 3
for p in "$@"; do
  printf '== %s\\n' "$p"
  if [ -e "$p" ]; then
    find "$p" -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum || exit 4
  else
    echo missing
  fi
done`;

/**
 * The content hash of each input path (as written in the template: `~/app/migrations`,
 * `/etc/app.conf`), computed in the workspace by its own agent: the files are where the
 * developer edits them. Each hash is SHA-256 over the path's sorted `sha256sum` listing.
 */
export async function hashInputs(agents: Pick<AgentHub, 'exec'>, workspaceId: string, paths: readonly string[], signal?: AbortSignal): Promise<InputHashes> {
  if (paths.length === 0) return {};
  const stdout: Buffer[] = [];
  let size = 0;
  let stderr = '';
  const result = await runAgentCommand(agents, workspaceId, ['sh', '-c', HASH_SCRIPT, 'den-inputs', ...paths.map(inHome)], {
    timeoutMs: HASH_TIMEOUT_MS,
    signal,
    onOutput(stream, chunk) {
      if (stream === 'stderr') {
        if (stderr.length < 2000) stderr += chunk.toString('utf8');
        return;
      }
      size += chunk.length;
      if (size <= MAX_LISTING_BYTES) stdout.push(chunk);
    },
  });
  if (size > MAX_LISTING_BYTES) {
    throw new AppError('ENVIRONMENT_INPUTS_FAILED', `The inputs ${paths.join(', ')} hold too many files to hash (more than ${MAX_LISTING_BYTES / 1024 / 1024} MiB of listing); name narrower paths in the template's inputs.`);
  }
  if (result.exitCode !== 0) {
    const why = result.timedOut ? `took longer than ${HASH_TIMEOUT_MS / 1000} s` : `failed (exit status ${result.exitCode ?? 'none'}): ${stderr.trim().split('\n').slice(-3).join(' ') || 'no message'}`;
    throw new AppError('ENVIRONMENT_INPUTS_FAILED', `Hashing the inputs ${paths.join(', ')} in the workspace ${why}. Check that the workspace is running and the paths are readable (\`den exec WS -- ls -la PATH\`).`);
  }
  return sectionHashes(Buffer.concat(stdout).toString('utf8'), paths);
}

/** Splits the listing at its `== path` headers and hashes each section. */
export function sectionHashes(listing: string, paths: readonly string[]): InputHashes {
  const hashes: Record<string, string> = {};
  const sections = listing.split(/^== .*\n/m).slice(1);
  paths.forEach((path, index) => {
    hashes[path] = createHash('sha256').update(sections[index] ?? 'missing\n').digest('hex');
  });
  return hashes;
}

/** `~/x` -> `x` (the script runs in $HOME), `~` -> `.`; absolute and relative paths stay. */
function inHome(path: string): string {
  if (path === '~') return '.';
  return path.startsWith('~/') ? path.slice(2) || '.' : path;
}
