import { useEffect, useState } from 'react';
import { errorText } from './api.ts';

/** a log view keeps this many lines (the server keeps them all: `den logs`) */
const MAX_LINES = 5_000;

/** Items of a stream as they arrive (the last MAX_LINES), until the component goes away. */
export function useStream<T>(open: (signal: AbortSignal) => AsyncIterable<T>, deps: unknown[]): { items: T[]; error?: string } {
  const [state, setState] = useState<{ items: T[]; error?: string }>({ items: [] });
  useEffect(() => {
    const controller = new AbortController();
    setState({ items: [] });
    let buffer: T[] = [];
    let frame = 0;
    const flush = () => {
      frame = 0;
      const batch = buffer;
      buffer = [];
      setState((previous) => ({ items: [...previous.items, ...batch].slice(-MAX_LINES) }));
    };
    void (async () => {
      try {
        for await (const item of open(controller.signal)) {
          buffer.push(item);
          frame ||= requestAnimationFrame(flush);
        }
      } catch (error) {
        if (!controller.signal.aborted) setState((previous) => ({ ...previous, error: errorText(error) }));
      }
    })();
    return () => {
      controller.abort();
      cancelAnimationFrame(frame);
    };
  }, deps);
  return state;
}

