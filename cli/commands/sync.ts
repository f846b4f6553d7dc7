import type { SyncStatus } from '../../protocol/sync.ts';
import { connect } from '../context.ts';
import { formatAge, print, printJson, printTable } from '../output.ts';

/** `den sync status WS`: one row per synced folder. */
export async function status(reference: string, options: { json?: boolean }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const { items } = await session.client.workspaces.syncStatus(ref.owner, ref.name);
  if (options.json) return printJson(items);
  show(items, `${ref.owner}/${ref.name} syncs nothing (its template declares no sync, or it is not running).`);
}

/** `den sync restart WS [SERVICE]`: a full copy, then watching again. */
export async function restart(reference: string, service: string | undefined, options: { json?: boolean }): Promise<void> {
  const session = connect();
  const ref = await session.workspaceRef(reference);
  const { items } = await session.client.workspaces.syncRestart(ref.owner, ref.name, service);
  if (options.json) return printJson(items);
  print(`Restarted the sync${service ? ` of ${service}` : 's'} of ${ref.owner}/${ref.name}; \`den sync status ${reference}\` shows the progress.`);
}

function show(items: SyncStatus[], empty: string): void {
  printTable(items, [
    { header: 'service', value: (s) => s.service },
    { header: 'from -> to', value: (s) => `${s.from} ${s.mode === 'two-way' ? '<->' : '->'} ${s.to}` },
    { header: 'state', value: (s) => (s.watchMode === 'scan' && s.state === 'watching' ? 'watching (scan)' : s.state) },
    { header: 'pending', value: (s) => String(s.pendingFiles) },
    { header: 'last applied', value: (s) => (s.lastApplied ? `${s.lastApplied.files} changes ${formatAge(s.lastApplied.at)}, ${Math.round(s.lastApplied.latencyMs)} ms` : '-') },
    { header: 'hash (workspace / service)', value: (s) => `${short(s.sourceHash)} / ${short(s.targetHash)}${s.inSync ? ' =' : ''}` },
    { header: 'conflicts', value: (s) => (s.mode === 'two-way' ? String(s.conflicts) : '-') },
    { header: 'restarted', value: (s) => (s.lastRestart ? `${formatAge(s.lastRestart.at)}, pid ${s.lastRestart.pid}` : '-') },
    { header: 'resent', value: (s) => (s.resyncs > 0 ? `${s.resentFiles} files in ${s.resyncs} resyncs` : '-') },
    { header: 'error', value: (s) => s.lastError ?? s.watchMessage ?? '' },
  ], empty);
  // the last conflict says where the service's version was kept: worth a line of its own
  for (const s of items) if (s.lastConflict) print(`${s.service}: last conflict ${formatAge(s.lastConflict.at)}: ${s.lastConflict.message}`);
}

function short(hash: string | null): string {
  return hash ? hash.slice(0, 12) : '-';
}
