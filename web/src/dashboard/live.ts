import { useEffect, useState } from 'react';
import { useQueryClient, type QueryClient } from '@tanstack/react-query';
import type { WorkspaceEvent } from '../../../protocol/events.ts';
import { den, errorText } from './api.ts';

export type LiveState = { kind: 'connecting' } | { kind: 'live' } | { kind: 'lost'; reason: string; retryInS: number };

/** Events arriving within this window refresh the pages once. */
const BATCH_MS = 250;
const BACKOFF_MAX_MS = 15_000;

/**
 * Follows the server's event stream (GET /api/v1/events) while signed in: each status, build or
 * agent change refreshes the workspace queries it touches, so lists and pages update without a
 * reload. A dropped stream is retried with backoff (and at once when the browser is back online);
 * the queries are refreshed on reconnect, since events may have been missed meanwhile.
 */
export function useLiveEvents(): LiveState {
  const queries = useQueryClient();
  const [state, setState] = useState<LiveState>({ kind: 'connecting' });
  useEffect(() => {
    let stopped = false;
    let controller: AbortController | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let failures = 0;
    const pending = new Set<string>();
    let flush: ReturnType<typeof setTimeout> | undefined;
    const onEvent = (event: WorkspaceEvent) => {
      pending.add(event.workspaceId);
      flush ??= setTimeout(() => {
        flush = undefined;
        const ids = [...pending];
        pending.clear();
        refresh(queries, ids);
      }, BATCH_MS);
    };
    const connect = async () => {
      controller = new AbortController();
      let reason = 'the stream ended';
      try {
        const stream = den().workspaces.watch({ signal: controller.signal });
        setState({ kind: 'live' });
        if (failures > 0) refresh(queries, []);
        for await (const event of stream) {
          failures = 0;
          onEvent(event);
        }
      } catch (error) {
        if ((error as { status?: number }).status === 401) {
          void queries.invalidateQueries({ queryKey: ['session'] });
          return;
        }
        reason = errorText(error);
      }
      if (stopped) return;
      failures++;
      const delay = Math.min(BACKOFF_MAX_MS, 500 * 2 ** (failures - 1));
      setState({ kind: 'lost', reason, retryInS: Math.round(delay / 1000) });
      timer = setTimeout(() => void connect(), delay);
    };
    const online = () => {
      if (!timer) return;
      clearTimeout(timer);
      timer = undefined;
      void connect();
    };
    addEventListener('online', online);
    void connect();
    return () => {
      stopped = true;
      controller?.abort();
      clearTimeout(timer);
      clearTimeout(flush);
      removeEventListener('online', online);
    };
  }, [queries]);
  return state;
}

/** Refetches the lists, and the pages of the workspaces that changed (all of them when `ids` is empty). */
function refresh(queries: QueryClient, ids: string[]): void {
  void queries.invalidateQueries({ queryKey: ['workspaces'] });
  void queries.invalidateQueries({
    predicate: (query) => query.queryKey[0] === 'workspace' && (ids.length === 0 || ids.includes(String((query.state.data as { id?: string } | undefined)?.id))),
  });
  void queries.invalidateQueries({ queryKey: ['builds'] });
  // the owner's environment views (a teammate's are asked only on request: each of their views is audited)
  void queries.invalidateQueries({ predicate: (query) => query.queryKey[0] === 'environment' && (query.state.data as { viewer?: string } | undefined)?.viewer === 'owner' });
  void queries.invalidateQueries({ queryKey: ['environment-runs'] });
}
