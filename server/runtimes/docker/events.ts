import type { Readable } from 'node:stream';
import type { RuntimeEvent } from '../driver.ts';
import type { DockerApi } from './docker-api.ts';
import { LABEL_KIND, LABEL_SERVICE, LABEL_WORKSPACE, labelFilter } from './objects.ts';

/**
 * Engine events stamped up to this long after den's own verb on a workspace ended are den's doing
 * (the engine's clock is the host's; its event times have nanoseconds, Date.now() milliseconds).
 */
const OWN_VERB_MARGIN_MS = 5;
/** Wait before subscribing again when the engine's event stream ends (an engine restart). */
const RESUBSCRIBE_MS = 1_000;

/** The engine's event as far as den reads it (GET /events, one JSON object per line). */
interface EngineEvent {
  Type?: string;
  Action?: string;
  time?: number;
  timeNano?: number;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
}

/**
 * The docker runtime's observations: the engine's own event stream for this den instance's
 * containers (die, oom, destroy), not polling. Events of a workspace while den runs a verb on
 * it, or stamped before that verb ended (the stream lags), are den's own stop, replace and delete,
 * and are dropped.
 */
export function observeDockerEvents(
  docker: DockerApi,
  instance: string,
  ownVerb: (workspaceId: string) => { active: boolean; endedAt: number },
  onEvent: (event: RuntimeEvent) => void,
): () => void {
  let stream: Readable | undefined;
  let closed = false;
  let retry: NodeJS.Timeout | undefined;

  const subscribe = async () => {
    const label = (JSON.parse(labelFilter(instance)) as { label: string[] }).label;
    try {
      stream = await docker.getEvents({ filters: JSON.stringify({ type: ['container'], event: ['die', 'oom', 'destroy'], label }) });
    } catch {
      if (!closed) retry = setTimeout(() => void subscribe(), RESUBSCRIBE_MS);
      return;
    }
    if (closed) return stream.destroy();
    let buffered = '';
    stream.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let newline: number;
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (!line) continue;
        try {
          handle(JSON.parse(line) as EngineEvent);
        } catch {
          // a line that is not an event is skipped; the next one is read
        }
      }
    });
    const again = () => {
      stream = undefined;
      if (!closed) retry = setTimeout(() => void subscribe(), RESUBSCRIBE_MS);
    };
    stream.once('end', again);
    stream.once('error', again);
  };

  const handle = (event: EngineEvent) => {
    const attributes = event.Actor?.Attributes ?? {};
    const workspaceId = attributes[LABEL_WORKSPACE];
    const kind = attributes[LABEL_KIND];
    if (!workspaceId || (kind !== 'workspace' && kind !== 'service')) return;
    const at = event.timeNano ? new Date(event.timeNano / 1e6) : new Date((event.time ?? Date.now() / 1000) * 1000);
    const verb = ownVerb(workspaceId);
    if (verb.active || at.getTime() <= verb.endedAt + OWN_VERB_MARGIN_MS) return;
    const subject: RuntimeEvent['subject'] = kind === 'service' ? { type: 'service', name: attributes[LABEL_SERVICE] } : { type: 'workspace' };
    const container = event.Actor?.ID ?? '';
    const detail = { container: container.slice(0, 12) };
    // the die that follows an oom finds the workspace down already and changes nothing
    if (event.Action === 'oom') {
      return onEvent({ workspaceId, kind: 'oom_killed', subject, cause: '', at, detail });
    }
    if (event.Action === 'die') {
      const exitCode = Number(attributes.exitCode);
      // 128 + n: the main process was killed by signal n (137: SIGKILL, 143: SIGTERM)
      const cause = exitCode > 128 ? `(killed by signal ${exitCode - 128})` : `with exit code ${exitCode}`;
      return onEvent({ workspaceId, kind: 'exited', subject, cause, at, detail: { ...detail, exitCode, signal: exitCode > 128 ? String(exitCode - 128) : null } });
    }
    if (event.Action === 'destroy') onEvent({ workspaceId, kind: 'removed', subject, cause: '', at, detail });
  };

  void subscribe();
  return () => {
    closed = true;
    clearTimeout(retry);
    stream?.destroy();
  };
}
